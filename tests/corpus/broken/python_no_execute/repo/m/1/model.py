import json


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args['model_config'])
