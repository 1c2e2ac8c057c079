"""Evaluation with the FMO deblurring benchmark's metrics (``metrics``), on fmolab shards (``samples``)
and the published benchmark folders (``benchmark_data``); ``evaluate`` scores, averages and logs."""
