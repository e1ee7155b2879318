"""`python -m services.pool` (also `fnas serve pool`): run the PoolService (AKP, paper 4.3).

Flags override FNAS_POOL_<FIELD> variables, which override the defaults.
SIGTERM or SIGINT stop it gracefully; every committed block is there on the next start.
"""

import sys

from fnas.service_main import ServiceMain
from services.pool.config import PoolConfig

service = ServiceMain("pool", PoolConfig, "services.pool.app:PoolApp", __doc__)
build_parser, run, main = service.build_parser, service.run, service.main

if __name__ == "__main__":
    sys.exit(main())
