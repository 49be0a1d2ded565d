"""`milvus-lite server` with the keepalive policy of a Milvus server (argv as `milvus-lite`'s).

pymilvus pings every 10 s, also with no call in flight. A gRPC server's defaults allow that
once per 5 minutes and answer more with GOAWAY "too_many_pings"; a process that then opens a
new client to the same URI (pymilvus shares one connection per URI) fails with "Fail connecting
to server" after about 100 s of quiet. Milvus admits such pings (5 s minimum, without calls);
this starts milvus-lite's own server with the same policy.
"""

from __future__ import annotations

import sys

import grpc

KEEPALIVE = [("grpc.keepalive_permit_without_calls", 1),
             ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
             ("grpc.http2.max_ping_strikes", 0)]


def _with_keepalive(server_factory):
    def server(*args, options=None, **kwargs):
        return server_factory(*args, options=[*(options or []), *KEEPALIVE], **kwargs)
    return server


if __name__ == "__main__":
    grpc.server = _with_keepalive(grpc.server)  # this process is the server only
    from milvus_lite.cmdline import main

    sys.exit(main(sys.argv[1:]))
