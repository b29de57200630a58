"""Validates a running prophetkv server's /openapi.json as an OpenAPI 3 document.

Usage: openapi_check.py --base-url http://127.0.0.1:PORT
Prints the paths it found and "openapi document valid" on success.
"""

import argparse
import json
import sys
import urllib.request

from openapi_spec_validator import validate


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args()
    with urllib.request.urlopen(f"{args.base_url}/openapi.json", timeout=30) as response:
        document = json.load(response)
    validate(document)
    version = document["openapi"]
    if not version.startswith("3."):
        print(f"not OpenAPI 3: {version}")
        return 1
    for path, item in sorted(document["paths"].items()):
        print(f"{', '.join(sorted(m.upper() for m in item))} {path}")
    print(f"openapi document valid (OpenAPI {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
