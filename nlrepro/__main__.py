from nlrepro.cli import main

raise SystemExit(main())
