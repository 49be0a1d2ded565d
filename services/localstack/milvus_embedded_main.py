"""Entry point run by the *milvus 2.3.5 venv's* python (not the project venv).

    <milvus-venv>/bin/python milvus_embedded_main.py BASE_DIR PORT

Starts the embedded real Milvus (C++ server + etcd + local MinIO-less storage) on
127.0.0.1:PORT and runs until SIGTERM/SIGINT, then stops it. Imports only `milvus`.
"""

import signal
import sys
import threading


def main() -> None:
    base_dir, port = sys.argv[1], int(sys.argv[2])
    from milvus import default_server as server

    server.set_base_dir(base_dir)
    server.listen_port = port
    server.config.set("proxy_host", "127.0.0.1") if "proxy_host" in server.config_keys else None
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    server.start()
    print(f"milvus 2.3.5 listening on 127.0.0.1:{port}", flush=True)
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
