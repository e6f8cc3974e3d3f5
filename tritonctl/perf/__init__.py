"""Load testing and config search for Triton-compatible servers (`tritonctl perf`, `tritonctl tune`).

settings.py   what a run is asked to do (levels, windows, inputs) and flag parsing
control.py    metadata / config / statistics / repository-load calls, HTTP and gRPC
inputs.py     which inputs to send and their data (random, zero, perf_analyzer JSON, .npy)
encode.py     requests serialized once before the load starts
transport.py  async senders: grpc.aio with raw bytes, a lean keep-alive HTTP/1.1 client
loadgen.py    the load processes (closed and open loop), streaming completion records
collector.py  the parent side: levels to processes, records into windows
measure.py    windows, percentiles, stability, server-side breakdown
runner.py     run_sweep(settings) -> SweepReport
report.py     JSON / CSV / tables / compare;  plot.py  PNGs (matplotlib, optional)
tune.py       candidate configs, search, restore;  tune_report.py  ranked table, Markdown report
"""
