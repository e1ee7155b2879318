"""`python -m services.agent` (also `fnas serve agent`): run the AgentService.

Flags override FNAS_AGENT_<FIELD> variables, which override the defaults.
SIGTERM or SIGINT stop it gracefully; running searches resume on the next start.
"""

import sys

from fnas.service_main import ServiceMain
from services.agent.config import AgentConfig

service = ServiceMain("agent", AgentConfig, "services.agent.app:AgentApp", __doc__)
build_parser, run, main = service.build_parser, service.run, service.main

if __name__ == "__main__":
    sys.exit(main())
