"""Local stand-ins for the platform's infrastructure: real processes, bound to 127.0.0.1.

Used by the local supervisor (`make up`) and by the tests' fixtures. Each server is started
from the project's own cached installs (scripts/bootstrap.sh) and stopped by PID.
"""
