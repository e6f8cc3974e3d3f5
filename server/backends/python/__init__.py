"""The python backend and tritonctl's triton_python_backend_utils."""
