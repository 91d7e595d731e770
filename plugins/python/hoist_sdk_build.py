"""`hoist-sdk-build APP_DIR -o plugin.wasm` (or `python -m hoist_sdk_build`): builds the hook
in APP_DIR/app.py into a component with componentize-py, against the WIT the hoist_sdk package
carries. (A module of its own: hoist_sdk itself only imports inside a component.)"""

import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="hoist-sdk-build", description="build APP_DIR/app.py into a hoist plugin component"
    )
    parser.add_argument("app_dir")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--module", default="app", help="the module defining Hooks (default app)")
    args = parser.parse_args()
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoist_sdk")
    sys.argv = [
        "componentize-py",
        "-d", os.path.join(here, "wit"),
        "-w", "hoist:hooks/hook",
        "componentize", args.module,
        "-p", os.path.abspath(args.app_dir),
        "-p", os.path.dirname(here),
        "-o", args.output,
    ]
    import componentize_py  # the build tool (pip install hoist-sdk brings it)

    return componentize_py.script()


if __name__ == "__main__":
    sys.exit(main())
