"""pyspop: the HAProxy side of SPOP for the Python test suites (standard library only).

    codec    varints (PROTOCOL-NOTES §2, not LEB128), typed data, KV lists, NOTIFY payloads,
             frames, ACK actions, status messages; encoders and decoders
    vectors  the hex vectors of PROTOCOL-NOTES §11 and CAPTURES.md, as whole frames
    client   Conn, a blocking SPOP client socket with a bounded frame reader
    agent    the agent process harness: free loopback port, captured log, bounded stop,
             kill-all on SIGTERM
    ports    free loopback ports, IPv6 loopback availability
    haproxy  real HAProxy: a binary per series (2.6 system, 3.0/3.2/3.4 cached), the config
             generation per version, start/-sf reload/stop with its log, admin socket, HTTP
             helpers and a load generator (used by every real-HAProxy suite)
    runner   runs a unittest suite and prints "N passed, N failed[, N skipped]"

Written from the protocol notes, not from the C++ headers, so that the suites using it keep
checking the library instead of agreeing with it. `python3 tests/pyspop/selftest.py` checks it
against the vectors.

Suites put the folder above this one (tests/) on sys.path and `import pyspop.codec` etc.
"""
