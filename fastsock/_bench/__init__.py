"""`fastsock bench`: the side-by-side comparison runner (fastsock vs stdlib, asyncio, uvloop, gevent, C).

Layout: `spec` (workloads, counts, implementations), `impls/` (the Python servers, one module
per workload), `c/` (the C reference programs, compiled on demand by `creference`),
`server` (the child process that runs one server), `pyclient` (the Python load generator
used when no C compiler is present), `procs` (child processes that never outlive the run),
`runner` (the loop over workloads x implementations x repetitions), `report`, `plot`,
`machine`, `progress` and `info` (`fastsock info`).
"""
