import sys

from rag_app.eval.cli import main

if __name__ == "__main__":
    sys.exit(main())
