"""Runs CPython's own socket test suite (test.test_socket) with `socket.socket` replaced by
`fastsock.socket` of the backend chosen by FASTSOCK_PURE. Prints one summary line:
    RESULT run=<n> failures=<n> errors=<n> skipped=<n> backend=<c|python>

The VSOCK tests are left out: they block forever in sandboxes without a vsock transport,
with the standard library's own socket as well.
"""

from __future__ import annotations

import socket
import sys
import unittest

import fastsock

socket.socket = fastsock.socket  # type: ignore[misc]  # what `import fastsock as socket` users get

import test.test_socket as suite_module


def flatten(suite: unittest.TestSuite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def main() -> int:
    tests = [t for t in flatten(unittest.TestLoader().loadTestsFromModule(suite_module))
             if "VSOCK" not in type(t).__name__]
    result = unittest.TextTestRunner(verbosity=1, stream=sys.stderr).run(unittest.TestSuite(tests))
    print(f"RESULT run={result.testsRun} failures={len(result.failures)} errors={len(result.errors)} "
          f"skipped={len(result.skipped)} backend={fastsock.BACKEND}")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
