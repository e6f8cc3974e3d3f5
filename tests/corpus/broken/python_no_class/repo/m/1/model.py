def execute(requests):
    return []
