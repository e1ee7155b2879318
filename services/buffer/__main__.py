"""`python -m services.buffer` (also `fnas serve buffer`): run the BufferService.

Flags override FNAS_BUFFER_<FIELD> variables, which override the defaults.
SIGTERM or SIGINT stop it gracefully; histories are reloaded on the next start.
"""

import sys

from fnas.service_main import ServiceMain
from services.buffer.config import BufferConfig

service = ServiceMain("buffer", BufferConfig, "services.buffer.app:BufferApp", __doc__)
build_parser, run, main = service.build_parser, service.run, service.main

if __name__ == "__main__":
    sys.exit(main())
