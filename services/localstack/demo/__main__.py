import os
import sys

from services.common.logging import configure_logging

from .cli import main

os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # milvus-lite answers the client's keepalive pings with GOAWAY
configure_logging("localstack", "WARNING", json_output=False)
sys.exit(main())
