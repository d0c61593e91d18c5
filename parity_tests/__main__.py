from parity_tests.harness.cli import main

raise SystemExit(main())
