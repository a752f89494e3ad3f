#!/usr/bin/env python3
"""Write Python distributions under DIR/usr/lib/python3/site-packages: a dist-info METADATA per
package and one egg-info PKG-INFO, with real names and versions. requests@2.30.0 and
werkzeug@2.3.7 have records in the PyPI archive bench/scan/run.sh builds, so the image has findings.
"""
import os
import sys

PACKAGES = [
    ("requests", "2.30.0"), ("urllib3", "2.0.7"), ("idna", "3.4"), ("certifi", "2023.7.22"),
    ("charset-normalizer", "3.3.0"), ("six", "1.16.0"), ("PyYAML", "6.0.1"), ("click", "8.1.7"),
    ("Jinja2", "3.1.2"), ("MarkupSafe", "2.1.3"), ("itsdangerous", "2.1.2"), ("Flask", "2.3.3"),
    ("packaging", "23.2"), ("setuptools", "68.2.2"), ("wheel", "0.41.2"), ("attrs", "23.1.0"),
    ("python-dateutil", "2.8.2"), ("pytz", "2023.3"), ("typing_extensions", "4.8.0"),
    ("zipp", "3.17.0"),
]


def main():
    site = os.path.join(sys.argv[1], "usr/lib/python3/site-packages")
    for name, version in PACKAGES:
        d = os.path.join(site, f"{name.replace('-', '_')}-{version}.dist-info")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n{name} body\n")
    d = os.path.join(site, "Werkzeug-2.3.7-py3.11.egg-info")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "PKG-INFO"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: werkzeug\nVersion: 2.3.7\n")


if __name__ == "__main__":
    main()
