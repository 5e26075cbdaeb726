from kdtune.cli import main

raise SystemExit(main())
