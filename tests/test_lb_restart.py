"""Restarting one process group behind a real load balancer (HAProxy, TCP mode) loses no
request, on both backends: the scenario is tests/lb_restart.py (also the README's figure,
`python tests/lb_restart.py --backend c`). Every request a worker received was answered by
that worker before its graceful stop closed the connection; the client saw only
connection-level errors, which it retried, and every request was answered in the end."""

from __future__ import annotations

import os

import lb_restart
import pytest
from tools import needs, tool

pytestmark = [
    pytest.mark.slow,  # four server processes, HAProxy and a client, ~6 s per backend
    pytest.mark.timeout(120),
    needs("haproxy"),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need fork()"),
]


def test_sigterm_and_restart_of_one_group_behind_haproxy_loses_no_request(impl, tmp_path):
    haproxy = tool("haproxy")
    assert haproxy is not None
    result = lb_restart.run(impl, haproxy, str(tmp_path))
    print(result.summary())  # the figure, for pytest -s / -rA
    report = os.environ.get("LB_RESTART_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(result.summary() + "\n")
    assert result.lost == 0, result.summary()
    assert result.unanswered == 0, result.summary()
    assert result.processed_twice == 0, result.summary()
    assert result.failures == [], result.summary()  # only connection-level errors, all retried
    assert result.answered == result.sent, result.summary()
    assert result.received_by.get("a2", 0) > 0, result.summary()  # the balancer sent traffic back to A
    assert not result.problems, result.summary()
