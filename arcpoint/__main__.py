from arcpoint.cli import main

raise SystemExit(main())
