"""The Python servers of each workload: `SERVERS[key](listener, params, meter) -> dict`."""
