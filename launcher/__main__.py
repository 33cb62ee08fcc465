"""``python -m launcher``: compose the Hydra config, validate it, plan, then run, dry-run or preview."""

from launcher.app import main

if __name__ == "__main__":
    main()
