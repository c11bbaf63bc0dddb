from lmcdash.cli import main

raise SystemExit(main())
