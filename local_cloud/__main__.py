"""`python -m local_cloud up|env|down|serve`: see local_cloud/README.md."""

from local_cloud.cloud import main

raise SystemExit(main())
