from meridian.cli import main

raise SystemExit(main())
