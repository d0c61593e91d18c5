import sys

from deploy.rehearsal.run import main

sys.exit(main())
