#!/usr/bin/env python3
"""Fails if a log file holds a secret the test suite knows (issue 4: no PIN, key, derived
key or IV in any log).

  scan_logs_for_secrets.py --secrets DIR PATH...
  scan_logs_for_secrets.py --self-test

DIR holds the registry the tests write (tests/support/known_secrets.h): one file per test
process, one secret per line, "text HEX" (a PIN: its bytes), "bytes HEX" (a 32-byte
value: a derivation vector, a derived key) or "epoch HEX" (an epoch key of the epoch
tier, derived by a test through the token with a generation's root key). PATHs are files
or folders (searched recursively; DIR itself is skipped). Each secret is looked for as
its raw bytes, and byte values (bytes, epoch) also in lower- and upper-case hex and
base64. The summary line counts the epoch keys looked for. A hit prints
"FILE:LINE: holds known test secret #N (KIND, ENCODING)" -- never the secret -- and the
exit code is 1. Exit 0: nothing found; 2: usage.
"""
import base64
import os
import sys
import tempfile

KINDS = ("text", "bytes", "epoch")  # "bytes" and "epoch" are byte values


def load_secrets(secrets_dir):
    secrets = []  # (kind, bytes)
    if not os.path.isdir(secrets_dir):
        return secrets
    for name in sorted(os.listdir(secrets_dir)):
        with open(os.path.join(secrets_dir, name), encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) != 2 or parts[0] not in KINDS:
                    continue
                try:
                    value = bytes.fromhex(parts[1])
                except ValueError:
                    continue
                if len(value) >= 8 and (parts[0], value) not in secrets:
                    secrets.append((parts[0], value))
    return secrets


def patterns(secrets):
    out = []  # (needle bytes, index, kind, encoding)
    for i, (kind, value) in enumerate(secrets, 1):
        out.append((value, i, kind, "raw"))
        if kind != "text":
            out.append((value.hex().encode(), i, kind, "hex"))
            out.append((value.hex().upper().encode(), i, kind, "HEX"))
            out.append((base64.b64encode(value).rstrip(b"="), i, kind, "base64"))
    return out


def files_under(paths, skip):
    skip = os.path.realpath(skip)
    for p in paths:
        if os.path.isfile(p):
            yield p
        elif os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                if os.path.realpath(root).startswith(skip):
                    continue
                dirs[:] = [d for d in dirs if not os.path.realpath(os.path.join(root, d)).startswith(skip)]
                for f in files:
                    yield os.path.join(root, f)


def scan(secrets_dir, paths, out=sys.stdout):
    """Returns (files scanned, hits)."""
    needles = patterns(load_secrets(secrets_dir))
    scanned, hits = 0, 0
    for path in files_under(paths, secrets_dir):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        scanned += 1
        for needle, i, kind, encoding in needles:
            at = data.find(needle)
            if at >= 0:
                hits += 1
                line = data.count(b"\n", 0, at) + 1
                print(f"{path}:{line}: holds known test secret #{i} ({kind}, {encoding})", file=out)
    return scanned, hits


def self_test():
    """The scan finds each encoding of a planted secret and nothing in a clean file."""
    with tempfile.TemporaryDirectory() as d:
        sdir, ldir = os.path.join(d, "secrets"), os.path.join(d, "logs")
        os.makedirs(sdir)
        os.makedirs(os.path.join(ldir, "sub"))
        pin, key, epoch_key = b"pin-0123456789ab", bytes(range(0x40, 0x60)), bytes(range(0x90, 0xB0))
        with open(os.path.join(sdir, "1.txt"), "w") as f:
            f.write(f"text {pin.hex()}\nbytes {key.hex()}\nepoch {epoch_key.hex()}\n")
        clean = os.path.join(ldir, "clean.log")
        with open(clean, "w") as f:
            f.write("nothing to see\n" + key.hex()[:40] + "\n")
        failures = []
        import io
        if scan(sdir, [ldir])[1] != 0:
            failures.append("a clean log was reported")
        planted = {
            "pin": b"login with " + pin + b"\n",
            "hex": b"x\nkey=" + key.hex().encode() + b"\n",
            "HEX": key.hex().upper().encode(),
            "base64": b"k:" + base64.b64encode(key),
            "raw": b"\x00" + key,
            "epoch-hex": b"epoch key " + epoch_key.hex().encode(),
            "epoch-raw": b"\x01" + epoch_key + b"\x02",
            "epoch-base64": base64.b64encode(epoch_key),
        }
        for what, content in planted.items():
            path = os.path.join(ldir, "sub", what + ".log")
            with open(path, "wb") as f:
                f.write(content)
            buf = io.StringIO()
            scanned, hits = scan(sdir, [ldir], buf)
            if hits != 1 or path not in buf.getvalue() or (what.startswith("epoch") and "(epoch," not in buf.getvalue()):
                failures.append(f"planted {what}: {hits} hit(s): {buf.getvalue().strip()}")
            if pin.decode() in buf.getvalue() or key.hex() in buf.getvalue() or epoch_key.hex() in buf.getvalue():
                failures.append("the report repeats the secret")
            os.remove(path)
        for f in failures:
            print("self-test:", f)
        print("self-test:", "ok" if not failures else "FAILED")
        return 0 if not failures else 1


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) < 4 or argv[1] != "--secrets":
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    scanned, hits = scan(argv[2], argv[3:])
    secrets = load_secrets(argv[2])
    epochs = sum(1 for kind, _ in secrets if kind == "epoch")
    print(f"scanned {scanned} file(s) for {len(secrets)} known test secret(s), {epochs} of them epoch keys: "
          f"{hits} hit(s)")
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
