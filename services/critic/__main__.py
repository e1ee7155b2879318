"""`python -m services.critic` (also `fnas serve critic`): run the CriticService.

Flags override FNAS_CRITIC_<FIELD> variables, which override the defaults.
SIGTERM or SIGINT stop it gracefully; histories and nets are reloaded on the next start.
"""

import sys

from fnas.service_main import ServiceMain
from services.critic.config import CriticConfig

service = ServiceMain("critic", CriticConfig, "services.critic.app:CriticApp", __doc__)
build_parser, run, main = service.build_parser, service.run, service.main

if __name__ == "__main__":
    sys.exit(main())
