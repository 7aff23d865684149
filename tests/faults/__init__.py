"""Fault injection: bad inputs, killed processes, full and read-only disks, concurrent runs (issue 13).

Each test feeds cnnkit something a careless or hostile user (or a failing machine) could,
and checks what it gets: a clear refusal naming the problem, never a traceback, a hang,
a silent wrong result or a lost file.
"""
