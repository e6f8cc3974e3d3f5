"""`tritonctl rollout`: version rollouts as a state machine over a server's repository API.

plan.py (settings, the plan, the configs loaded), shadow.py (same requests to both versions),
gates.py (what passes), state.py (the state file), machine.py (the transitions, rollback).
"""
