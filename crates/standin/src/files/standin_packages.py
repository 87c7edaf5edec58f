"""Stand-in package manager: what opkg (and, for apk trees, apk) do inside a real Image
Builder, on the stand-in's packages (docs/standin.md, "Packages and feeds").

Feeds come ONLY from the repository list of the tree (`repositories.conf` for opkg,
`repositories` for apk) plus the local `packages/` directory. `file:` URLs are read; any other
URL fails the way opkg/apk fail without a network: the stand-in never uses the network.
Indexes are checked against their usign signature with the keys in `keys/` when the tree
asks for signature checks; package files against the index's `Size` and `SHA256sum`.
Standard library only.
"""

import base64
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

TOPDIR = os.environ.get("TOPDIR") or os.getcwd()
LISTS_DIR = os.path.join(TOPDIR, "dl", "lists")
SOURCES = os.path.join(LISTS_DIR, ".sources.json")


def fail(message):
    sys.stderr.write(message + "\n")
    sys.exit(1)


# ---------------------------------------------------------------- Ed25519 (RFC 8032 §6)

P = 2 ** 255 - 19
Q = 2 ** 252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(a, b):
    x = (a[1] - a[0]) * (b[1] - b[0]) % P
    y = (a[1] + a[0]) * (b[1] + b[0]) % P
    c = 2 * a[3] * b[3] * D % P
    d = 2 * a[2] * b[2] % P
    e, f, g, h = y - x, d - c, d + c, y + x
    return (e * f, g * h, f * g, e * h)


def _mul(scalar, point):
    result = (0, 1, 1, 0)
    while scalar > 0:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _equal(a, b):
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P)
    if x2 % P == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def _decompress(data):
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


_GY = 4 * pow(5, P - 2, P) % P
_GX = _recover_x(_GY, 0)
BASE = (_GX, _GY, 1, _GX * _GY % P)


def ed25519_verify(public, message, signature):
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decompress(public)
    r = _decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % Q
    return _equal(_mul(s, BASE), _add(r, _mul(h, a)))


def usign_verify(message, signature_text):
    """True when a key in keys/ (named by key id, as opkg keeps them) signed `message`."""
    try:
        blob = base64.b64decode(signature_text.splitlines()[1])
    except (IndexError, ValueError):
        return False
    if len(blob) != 74 or blob[:2] != b"Ed":
        return False
    key_path = os.path.join(TOPDIR, "keys", blob[2:10].hex())
    try:
        with open(key_path, encoding="utf-8") as f:
            key = base64.b64decode(f.read().splitlines()[1])
    except (OSError, IndexError, ValueError):
        return False
    if len(key) != 42 or key[:2] != b"Ed" or key[2:10] != blob[2:10]:
        return False
    return ed25519_verify(key[10:], message, blob[10:])


# ---------------------------------------------------------------- versions (dpkg order)


def _order(char):
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a, b):
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_version(version):
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    try:
        epoch = int(epoch or "0")
    except ValueError:
        epoch = 0
    return epoch, upstream, revision


def compare_versions(a, b):
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def satisfies(version, op, wanted):
    if not op:
        return True
    order = compare_versions(version, wanted)
    return {
        "=": order == 0, ">=": order >= 0, "<=": order <= 0,
        ">>": order > 0, ">": order > 0, "<<": order < 0, "<": order < 0,
    }.get(op, False)


def parse_relation(text):
    """`kernel (= 5.15-1)` → ("kernel", "=", "5.15-1"); `libc` → ("libc", "", "")."""
    text = text.strip()
    if "(" not in text:
        return text, "", ""
    name, _, rest = text.partition("(")
    rest = rest.rstrip(")").strip()
    op = ""
    for candidate in (">=", "<=", ">>", "<<", "=", ">", "<"):
        if rest.startswith(candidate):
            op = candidate
            break
    return name.strip(), op, rest[len(op):].strip()


def parse_depends(text):
    """Comma-separated entries, each a list of `|` alternatives."""
    entries = []
    for item in text.split(","):
        alternatives = [parse_relation(alt) for alt in item.split("|") if alt.strip()]
        if alternatives:
            entries.append(alternatives)
    return entries


# ---------------------------------------------------------------- indexes


def parse_index(text):
    packages = []
    stanza = {}
    for line in text.split("\n") + [""]:
        if not line.strip():
            if "Package" in stanza:
                packages.append(stanza)
            stanza = {}
        elif ": " in line and not line.startswith(" "):
            key, value = line.split(": ", 1)
            stanza[key] = value
    return packages


def member_bytes(archive, name):
    """A member's bytes by name, with or without the `./` prefix ipkg-build writes."""
    for member in archive.getmembers():
        if os.path.normpath(member.name) == name and member.isfile():
            return archive.extractfile(member).read()
    raise KeyError(name)


def package_file_control(path):
    """The `control` fields of a package file (a gzipped tar holding control.tar.gz)."""
    with tarfile.open(path, "r:gz") as outer:
        control_tar = member_bytes(outer, "control.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(control_tar), mode="r:gz") as control:
        text = member_bytes(control, "control").decode("utf-8")
    parsed = parse_index(text)
    return parsed[0] if parsed else {}


FIELD_ORDER = ["Package", "Version", "Depends", "Provides", "Conflicts", "Section",
               "Architecture", "Installed-Size", "Filename", "Size", "SHA256sum", "Description"]


def build_local_index(apk):
    """`package_index`: index every package file dropped into packages/ (as
    scripts/ipkg-make-index.sh does; apk trees write the stand-in packages.adb)."""
    directory = os.path.join(TOPDIR, "packages")
    suffix = ".apk" if apk else ".ipk"
    text = ""
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not name.endswith(suffix) or not os.path.isfile(path):
            continue
        fields = package_file_control(path)
        with open(path, "rb") as f:
            data = f.read()
        fields.update({"Filename": name, "Size": str(len(data)),
                       "SHA256sum": hashlib.sha256(data).hexdigest()})
        text += "".join("%s: %s\n" % (key, fields[key]) for key in FIELD_ORDER if key in fields)
        text += "\n"
    if apk:
        write_text(os.path.join(directory, "packages.adb"), text)
        return
    write_text(os.path.join(directory, "Packages"), text)
    with open(os.path.join(directory, "Packages.gz"), "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
            gz.write(text.encode())


def write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def local_index_stale(apk):
    directory = os.path.join(TOPDIR, "packages")
    stamp = os.path.join(directory, "packages.adb" if apk else "Packages.gz")
    if not os.path.exists(stamp):
        return True
    newest = max((os.path.getmtime(os.path.join(directory, name))
                  for name in os.listdir(directory)), default=0)
    return newest > os.path.getmtime(stamp)


# ---------------------------------------------------------------- repositories


def repositories(apk):
    """[(name, base URL, index file name, gzipped)] in the order the tree lists them, the local
    `packages/` feed included, and whether indexes must carry a valid signature."""
    if apk:
        feeds = []
        with open(os.path.join(TOPDIR, "repositories"), encoding="utf-8") as f:
            for line in f:
                url = line.strip()
                if url and not url.startswith("#"):
                    base = url[:-len("/packages.adb")] if url.endswith("/packages.adb") else url
                    feeds.append((url, base, "packages.adb", False))
        feeds.append(("imagebuilder", "file:packages", "packages.adb", False))
        return feeds, read_config_flag("CONFIG_SIGNATURE_CHECK")
    feeds, check = [], False
    with open(os.path.join(TOPDIR, "repositories.conf"), encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if len(words) >= 3 and words[0] in ("src/gz", "src"):
                gz = words[0] == "src/gz"
                feeds.append((words[1], words[2], "Packages.gz" if gz else "Packages", gz))
            elif words[:2] == ["option", "check_signature"]:
                check = True
    return feeds, check


def read_config_flag(name):
    with open(os.path.join(TOPDIR, ".config"), encoding="utf-8") as f:
        return any(line.strip() == name + "=y" for line in f)


def local_path(url):
    """The file a `file:` URL or an absolute path names (relative ones against the tree), or
    None for anything that would need the network."""
    if url.startswith("/"):
        return url
    if url.startswith("file://"):
        return url[len("file://"):]
    if url.startswith("file:"):
        path = url[len("file:"):]
        return path if os.path.isabs(path) else os.path.join(TOPDIR, path)
    return None


def read_url(url):
    """Bytes at a URL, or None: only `file:` URLs can be read (no network here)."""
    path = local_path(url)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def list_path(name):
    return os.path.join(LISTS_DIR, name.replace("/", "_").replace(":", "_"))


def update(apk):
    """`opkg update` / `apk update`: fetch and check every feed's index into dl/lists/."""
    feeds, check = repositories(apk)
    os.makedirs(LISTS_DIR, exist_ok=True)
    sources = []
    for name, base, index_name, gz in feeds:
        url = base + "/" + index_name
        local = name == "imagebuilder"
        if apk:
            sys.stderr.write("fetch %s\n" % url)
        else:
            sys.stderr.write("Downloading %s\n" % url)
        data = read_url(url)
        if data is None:
            if apk:
                reason = ("No such file or directory" if local_path(url) is not None
                          else "network error (check Internet connection and firewall)")
                sys.stderr.write("WARNING: updating and opening %s: %s\n" % (url, reason))
            else:
                sys.stderr.write("*** Failed to download the package list from %s\n\n" % url)
            continue
        if gz:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                sys.stderr.write("*** Failed to decompress the package list from %s\n\n" % url)
                continue
        if check and not local and not signature_ok(base, index_name, data, apk):
            continue
        path = list_path(name)
        with open(path, "wb") as f:
            f.write(data)
        sources.append({"name": name, "base": base, "list": path})
        if not apk:
            sys.stderr.write("Updated list of available packages in %s\n" % path)
    with open(SOURCES, "w", encoding="utf-8") as f:
        json.dump(sources, f)


def signature_ok(base, index_name, data, apk):
    sig_name = ("packages.adb" if apk else "Packages") + ".sig"
    sig_url = base + "/" + sig_name
    if not apk:
        sys.stderr.write("Downloading %s\n" % sig_url)
    signature = read_url(sig_url)
    if signature is not None and usign_verify(data, signature.decode("utf-8", "replace")):
        if not apk:
            sys.stderr.write("Signature check passed.\n")
        return True
    if apk:
        sys.stderr.write("WARNING: updating and opening %s/%s: UNTRUSTED signature\n"
                         % (base, index_name))
    else:
        sys.stderr.write("Signature check failed.\nRemove wrong Signature file.\n")
    return False


def available():
    """Every package of every updated feed: [{fields..., "_base": feed base URL}], feed order."""
    try:
        with open(SOURCES, encoding="utf-8") as f:
            sources = json.load(f)
    except OSError:
        return []
    packages = []
    for rank, source in enumerate(sources):
        with open(source["list"], encoding="utf-8") as f:
            for stanza in parse_index(f.read()):
                stanza["_base"] = source["base"]
                stanza["_rank"] = rank
                packages.append(stanza)
    return packages


# ---------------------------------------------------------------- resolving


class Universe:
    def __init__(self, packages):
        self.by_name = {}
        self.providers = {}
        for package in packages:
            self.by_name.setdefault(package["Package"], []).append(package)
            for provided in package.get("Provides", "").split(","):
                provided = parse_relation(provided)[0]
                if provided:
                    self.providers.setdefault(provided, []).append(package)

    def knows(self, name):
        return name in self.by_name or name in self.providers

    def best(self, name, op="", wanted="", chosen=None):
        """opkg's choice: the highest version of that name satisfying the constraint (the
        earlier feed on a tie); else a provider, preferring one already chosen."""
        candidates = [p for p in self.by_name.get(name, []) if satisfies(p["Version"], op, wanted)]
        if candidates:
            best = candidates[0]
            for candidate in candidates[1:]:
                if compare_versions(candidate["Version"], best["Version"]) > 0:
                    best = candidate
            return best
        providers = sorted(self.providers.get(name, []), key=lambda p: (p["_rank"], p["Package"]))
        for provider in providers:
            if chosen is not None and provider["Package"] in chosen:
                return provider
        return providers[0] if providers and not op else None


def resolve(universe, requested, apk):
    """Packages to install in install order (dependencies first), or exit with the package
    manager's error text."""
    missing = [name for name in requested if not universe.knows(name)]
    if missing:
        report_missing(missing, apk)
    chosen, order = {}, []

    def visit(name, op, wanted, parent):
        package = universe.best(name, op, wanted, chosen)
        if package is None:
            relation = name + (" (%s %s)" % (op, wanted) if op else "")
            report_unsatisfied(parent, relation, apk)
        if package["Package"] in chosen:
            return
        chosen[package["Package"]] = package
        for alternatives in parse_depends(package.get("Depends", "")):
            pick = next((alt for alt in alternatives
                         if universe.best(alt[0], alt[1], alt[2], chosen)), alternatives[0])
            visit(pick[0], pick[1], pick[2], package["Package"])
        order.append(package)

    for name in requested:
        visit(name, "", "", None)
    check_conflicts(chosen, apk)
    return order


def check_conflicts(chosen, apk):
    provided = {}
    for package in chosen.values():
        provided.setdefault(package["Package"], []).append(package["Package"])
        for name in package.get("Provides", "").split(","):
            name = parse_relation(name)[0]
            if name:
                provided.setdefault(name, []).append(package["Package"])
    for package in chosen.values():
        for entry in package.get("Conflicts", "").split(","):
            name, op, wanted = parse_relation(entry)
            for other in provided.get(name, []) if name else []:
                if other != package["Package"] and satisfies(chosen[other]["Version"], op, wanted):
                    report_conflict(package, chosen[other], apk)


def report_missing(missing, apk):
    if apk:
        lines = ["ERROR: unable to select packages:"]
        for name in missing:
            lines += ["  %s (no such package):" % name, "    required by: world[%s]" % name]
    else:
        lines = ["Collected errors:"]
        lines += [" * opkg_install_cmd: Cannot install package %s." % name for name in missing]
    fail("\n".join(lines))


def report_unsatisfied(parent, relation, apk):
    if apk:
        fail("ERROR: unable to select packages:\n  %s (no such package):\n    required by: %s"
             % (relation, parent or "world"))
    if parent is None:
        fail("Collected errors:\n * opkg_install_cmd: Cannot install package %s." % relation)
    fail("Collected errors:\n * satisfy_dependencies_for: Cannot satisfy the following "
         "dependencies for %s:\n * \t%s" % (parent, relation))


def report_conflict(package, other, apk):
    if apk:
        fail("ERROR: unable to select packages:\n  %s-%s:\n    conflicts: %s-%s[%s]"
             % (package["Package"], package["Version"], other["Package"], other["Version"],
                other["Package"]))
    fail("Collected errors:\n * check_conflicts_for: The following packages conflict with %s:\n"
         " * check_conflicts_for: \t%s \n * opkg_install_cmd: Cannot install package %s."
         % (package["Package"], other["Package"], package["Package"]))


# ---------------------------------------------------------------- installing


def fetch_package(package, apk):
    """The package file's bytes from its feed, checked against the index."""
    url = package["_base"] + "/" + package.get("Filename", "")
    name, version = package["Package"], package["Version"]
    data = read_url(url)
    if data is None:
        if apk:
            fail("ERROR: %s-%s: fetching %s: No such file or directory" % (name, version, url))
        fail("Collected errors:\n * opkg_download_pkg: Failed to download %s\n"
             " * opkg_install_cmd: Cannot install package %s." % (url, name))
    expected = package.get("Size")
    if expected is not None and str(len(data)) != expected:
        if apk:
            fail("ERROR: %s-%s: unexpected end of file (size %d, index says %s)"
                 % (name, version, len(data), expected))
        fail("Collected errors:\n * opkg_install_pkg: Package size mismatch: %s is %d bytes, "
             "expecting %s bytes\n * opkg_install_cmd: Cannot install package %s."
             % (name, len(data), expected, name))
    digest = package.get("SHA256sum")
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        if apk:
            fail("ERROR: %s-%s: BAD archive (checksum mismatch)" % (name, version))
        fail("Collected errors:\n * opkg_install_pkg: Package %s sha256sum mismatch. Either the "
             "opkg metadata or the package archive is corrupt.\n"
             " * opkg_install_cmd: Cannot install package %s." % (name, name))
    return data


def unpack_data(data, root):
    """Extracts the package's data.tar.gz into the rootfs: directories and regular files only,
    never outside the rootfs."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as outer:
        inner = member_bytes(outer, "data.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as payload:
        for member in payload.getmembers():
            relative = os.path.normpath(member.name.lstrip("./") or ".")
            if relative.startswith("..") or os.path.isabs(relative):
                continue
            target = os.path.join(root, relative)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
            elif member.isfile():
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if os.path.lexists(target):
                    os.remove(target)
                with open(target, "wb") as f:
                    f.write(payload.extractfile(member).read())
                os.chmod(target, member.mode & 0o7777)
