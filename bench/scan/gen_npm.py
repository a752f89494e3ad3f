#!/usr/bin/env python3
"""Write DIR/app/{package.json,package-lock.json,node_modules/<name>/package.json} for N npm packages.

Names look like real npm packages: a list of real names first, then word combinations.
lodash@4.17.15 and minimist@1.2.0 are always included (both have advisories in the shared
bundle, so the image has findings). Deterministic: the same N gives the same files.
"""
import json
import os
import random
import sys

REAL = [
    "express", "react", "react-dom", "chalk", "commander", "debug", "axios", "moment", "uuid",
    "async", "bluebird", "underscore", "request", "glob", "semver", "yargs", "mkdirp", "rimraf",
    "colors", "through2", "body-parser", "classnames", "prop-types", "fs-extra", "inquirer",
    "dotenv", "cheerio", "jquery", "ws", "rxjs", "tslib", "core-js", "qs", "minimatch", "cookie",
    "mime", "ms", "once", "inherits", "safe-buffer", "readable-stream", "string_decoder",
    "escape-string-regexp", "supports-color", "has-flag", "ansi-styles", "color-convert",
    "color-name", "wrappy", "balanced-match", "brace-expansion", "concat-map", "path-is-absolute",
    "graceful-fs", "source-map", "esprima", "estraverse", "acorn", "js-yaml", "argparse",
]
WORDS_A = ["fast", "tiny", "simple", "micro", "smart", "quick", "super", "easy", "pretty",
           "deep", "safe", "lazy", "async", "node", "json", "http", "stream", "path", "color",
           "string", "array", "object", "date", "file", "event", "promise", "config", "cache"]
WORDS_B = ["utils", "parser", "loader", "helper", "format", "merge", "match", "query", "store",
           "logger", "emitter", "queue", "router", "diff", "hash", "clone", "equal", "validator",
           "resolver", "watcher", "builder", "client", "proxy", "mapper", "tools", "kit"]


def names(n):
    out = ["lodash", "minimist"]
    seen = set(out)
    for name in REAL:
        if len(out) >= n:
            return out
        if name not in seen:
            out.append(name)
            seen.add(name)
    for a in WORDS_A:
        for b in WORDS_B:
            for name in (f"{a}-{b}", f"{a}{b}", f"@{a}/{b}"):
                if len(out) >= n:
                    return out
                if name not in seen:
                    out.append(name)
                    seen.add(name)
    raise SystemExit(f"cannot make {n} names")


def main():
    root, n = sys.argv[1], int(sys.argv[2])
    rnd = random.Random(n)
    app = os.path.join(root, "app")
    pkgs = {}
    for name in names(n):
        if name == "lodash":
            ver = "4.17.15"
        elif name == "minimist":
            ver = "1.2.0"
        else:
            ver = f"{rnd.randint(0, 9)}.{rnd.randint(0, 30)}.{rnd.randint(0, 20)}"
        pkgs[name] = ver
        d = os.path.join(app, "node_modules", name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "package.json"), "w") as f:
            json.dump({"name": name, "version": ver, "description": f"{name} module",
                       "main": "index.js", "license": "MIT"}, f, indent=2)
    deps = {k: f"^{v}" for k, v in pkgs.items()}
    with open(os.path.join(app, "package.json"), "w") as f:
        json.dump({"name": "bench-app", "version": "1.0.0", "dependencies": deps}, f, indent=2)
    lock = {"name": "bench-app", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
            "packages": {"": {"name": "bench-app", "version": "1.0.0", "dependencies": deps}}}
    for name, ver in pkgs.items():
        base = name.rsplit("/", 1)[-1]
        lock["packages"][f"node_modules/{name}"] = {
            "version": ver,
            "resolved": f"https://registry.npmjs.org/{name}/-/{base}-{ver}.tgz",
            "license": "MIT",
        }
    with open(os.path.join(app, "package-lock.json"), "w") as f:
        json.dump(lock, f, indent=2)


if __name__ == "__main__":
    main()
