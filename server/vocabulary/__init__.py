"""The ground floor's shared words: what every floor of the server (and tritonctl) speaks.

Tensors, requests and results (types.py), wire datatypes (dtypes.py), instance specs
(instances.py), GPUs (gpus.py), restricted-API groups (restrictions.py) and the HTTP/2 frame
codec (h2frames.py). Nothing here imports anything of the server above the ground floor
(repository/, errors): tests/unit/test_import_layers.py keeps it so.
"""
