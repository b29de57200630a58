"""Validates deploy/k8s/ offline against the Kubernetes API schemas.

Usage: k8s_check.py [--version 1.30] DIR
Every resource in every *.yaml under DIR (the kustomization itself aside) is
checked, strictly (unknown fields are errors), with the schemas that
kubernetes-validate ships; no cluster and no network are needed. Prints one
line per resource and "kubernetes manifests valid" when all pass.
"""

import argparse
import pathlib
import sys

import kubernetes_validate
import yaml


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--version", default="1.30")
    args = parser.parse_args()
    failures = 0
    count = 0
    for path in sorted(pathlib.Path(args.dir).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") == "Kustomization":
                continue
            count += 1
            name = f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"
            try:
                kubernetes_validate.validate(doc, args.version, strict=True)
                print(f"ok {name}")
            except kubernetes_validate.ValidationError as e:
                failures += 1
                print(f"INVALID {name}: {e.message} at {'.'.join(str(p) for p in e.path)}")
    kustomization = yaml.safe_load((pathlib.Path(args.dir) / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        if not (pathlib.Path(args.dir) / resource).is_file():
            failures += 1
            print(f"INVALID kustomization.yaml: {resource} does not exist")
    if failures or count == 0:
        print(f"{failures} invalid of {count}")
        return 1
    print(f"kubernetes manifests valid ({count} resources, Kubernetes {args.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
