#!/usr/bin/env python3
"""Stand-in Image Builder engine: the work the real IB does with opkg/apk, mksquashfs and
the json_*.py scripts, done on fake packages in about a second.

Called only by the stand-in Makefile (one sub-command per make step). Inputs come from
the environment the Makefile exports, `.config`, `include/standin.json`, and the package
feeds the repository list names (`standin_packages.py`). It never touches the network.
"""

import hashlib
import json
import os
import shutil
import sys
import time

import standin_packages as pkgs

# gzip, io, tarfile and zlib are imported where images are made: most steps never need
# them, and every step is its own process.

TOPDIR = os.environ.get("TOPDIR") or os.getcwd()
OWNER_FILE = ".standin-build-id"

# Init scripts shipped by packages: (service, START, STOP). None means "no such link".
SERVICES = {
    "base-files": [
        ("boot", 10, None),
        ("done", 95, None),
        ("led", 96, None),
        ("sysctl", 11, None),
        ("sysfixtime", 0, 90),
        ("system", 10, 90),
        ("umount", None, 90),
    ],
    "busybox": [("cron", 50, None)],
    "dnsmasq": [("dnsmasq", 19, 10)],
    "dropbear": [("dropbear", 19, 50)],
    "firewall4": [("firewall", 19, 90)],
    "logd": [("log", 12, None)],
    "netifd": [("network", 20, 90)],
    "odhcpd": [("odhcpd", 35, 85)],
    "odhcpd-ipv6only": [("odhcpd", 35, 85)],
    "rpcd": [("rpcd", 12, None)],
    "uhttpd": [("uhttpd", 50, None)],
    "urandom-seed": [("urandom_seed", 99, None)],
    "urngd": [("urngd", 0, None)],
    "wpad-basic-mbedtls": [("wpad", 24, None)],
    "wpad-mbedtls": [("wpad", 24, None)],
    "wpad-openssl": [("wpad", 24, None)],
    "collectd": [("collectd", 80, 10)],
    "lldpd": [("lldpd", 90, 10)],
    "snmpd": [("snmpd", 50, None)],
    "openvpn-openssl": [("openvpn", 90, 10)],
    "irqbalance": [("irqbalance", 11, None)],
    "zram-swap": [("zram", 15, None)],
    "mwan3": [("mwan3", 19, None)],
    "adblock": [("adblock", 30, None)],
    "sqm-scripts": [("sqm", 50, None)],
    "prometheus-node-exporter-lua": [("prometheus-node-exporter-lua", 60, None)],
}


# The rootfs's /etc/rc.common: the part of upstream's that image builds use. prepare_rootfs
# runs it as `bash ./etc/rc.common <init script> enable|disable` with IPKG_INSTROOT set; like
# upstream it sources the init script, so that script's top-level code runs too.
RC_COMMON = """#!/bin/sh
# stand-in rc.common (imagegen): enable/disable only
initscript=$1
action=${2:-help}
START=
STOP=
. "$initscript"
name=${initscript##*/}

disable() {
	rm -f "$IPKG_INSTROOT"/etc/rc.d/S??"$name" "$IPKG_INSTROOT"/etc/rc.d/K??"$name"
}

enable() {
	disable
	[ -z "$START" ] || ln -s "../init.d/$name" "$IPKG_INSTROOT/etc/rc.d/S$START$name"
	[ -z "$STOP" ] || ln -s "../init.d/$name" "$IPKG_INSTROOT/etc/rc.d/K$STOP$name"
}

case "$action" in
enable|disable) "$action" ;;
*) echo "rc.common: unsupported action: $action" >&2; exit 1 ;;
esac
"""


def fail(message):
    sys.stderr.write(message + "\n")
    sys.exit(1)


def env(name, default=""):
    return os.environ.get(name, default).strip()


def load_meta():
    with open(os.path.join(TOPDIR, "include", "standin.json"), encoding="utf-8") as f:
        return json.load(f)


def read_config():
    """`.config` is the only source of build options (as in the real IB sub-make)."""
    config = {}
    with open(os.path.join(TOPDIR, ".config"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("CONFIG_") and "=" in line:
                key, value = line.split("=", 1)
                config[key] = value.strip('"')
    return config


def use_apk(config):
    return config.get("CONFIG_USE_APK") == "y"


def enabled_filesystems(config):
    names = {
        "squashfs": "CONFIG_TARGET_ROOTFS_SQUASHFS",
        "ext4": "CONFIG_TARGET_ROOTFS_EXT4FS",
        "ubifs": "CONFIG_TARGET_ROOTFS_UBIFS",
        "jffs2": "CONFIG_TARGET_ROOTFS_JFFS2",
    }
    return {fs for fs, key in names.items() if config.get(key) == "y"}


def sanitize(text):
    return text.lower().replace("_", "-").replace(" ", "-")


def img_prefix(meta, config):
    parts = ["openwrt"]
    if config.get("CONFIG_VERSION_FILENAMES") == "y":
        parts.append(sanitize(meta["version_number"]))
    extra = env("EXTRA_IMAGE_NAME")
    if extra:
        parts.append(sanitize(extra))
    parts += [meta["board"], meta["subtarget"]]
    return "-".join(parts)


def profile_id():
    profile = env("USER_PROFILE")
    return profile[len("DEVICE_"):] if profile.startswith("DEVICE_") else profile


def device(meta):
    ident = profile_id()
    for dev in meta["devices"]:
        if dev["id"] == ident:
            return dev
    fail('Profile "%s" does not exist!' % ident)


# ---------------------------------------------------------------- packages


def abi_stripped(name):
    """STRIP_ABI=1: `libubox20230523` -> `libubox` (a trailing digit run after letters)."""
    stripped = name.rstrip("0123456789")
    if stripped != name and len(name) - len(stripped) >= 8 and stripped[-1:].isalpha():
        return stripped
    return name


# ---------------------------------------------------------------- rootfs


def target_dir():
    return env("TARGET_DIR")


def check_owner(stage):
    """Catch a second build that wiped or took over the shared rootfs staging directory."""
    build_id = env("STANDIN_BUILD_ID")
    if not build_id:
        return
    path = os.path.join(target_dir(), OWNER_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            found = f.read().strip()
    except OSError:
        found = "<missing>"
    if found != build_id:
        fail("ERROR: %s: %s was changed by another build running in this Image Builder "
             "directory (build id %s, expected %s); concurrent builds in one Image Builder "
             "directory are unsafe" % (stage, target_dir(), found, build_id))


def write_file(root, path, data, mode=0o644):
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    if os.path.lexists(full):
        os.remove(full)
    with open(full, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(full, mode)


def symlink(root, path, target):
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    if os.path.lexists(full):
        os.remove(full)
    os.symlink(target, full)


def init_script(start, stop):
    lines = ["#!/bin/sh /etc/rc.common", ""]
    if start is not None:
        lines.append("START=%02d" % start)
    if stop is not None:
        lines.append("STOP=%02d" % stop)
    lines += ["USE_PROCD=1", "", "start_service() {", "\t:", "}", ""]
    return "\n".join(lines)


def install_package_files(root, meta, config, name):
    """What the stand-in adds for well-known packages besides their files (init scripts,
    base-files' release files, busybox links)."""
    for service, start, stop in SERVICES.get(name, []):
        write_file(root, "/etc/init.d/" + service, init_script(start, stop), 0o755)
    if name == "base-files":
        install_base_files(root, meta)
    elif name == "busybox":
        write_file(root, "/bin/busybox", "#!/bin/sh\n# stand-in busybox\n", 0o755)
        symlink(root, "/bin/sh", "busybox")
        symlink(root, "/bin/ash", "busybox")
    elif name == "dropbear":
        write_file(root, "/etc/config/dropbear", "config dropbear\n\toption PasswordAuth 'on'\n")
    elif name in ("opkg", "apk-mbedtls", "apk-openssl"):
        install_package_manager_files(root, meta, config)


def install_base_files(root, meta):
    release = meta["version_number"]
    revision = meta["version_code"]
    write_file(root, "/etc/openwrt_release", "\n".join([
        "DISTRIB_ID='OpenWrt'",
        "DISTRIB_RELEASE='%s'" % release,
        "DISTRIB_REVISION='%s'" % revision,
        "DISTRIB_TARGET='%s/%s'" % (meta["board"], meta["subtarget"]),
        "DISTRIB_ARCH='%s'" % meta["arch_packages"],
        "DISTRIB_DESCRIPTION='OpenWrt %s %s'" % (release, revision),
        "DISTRIB_TAINTS=''",
        "",
    ]))
    write_file(root, "/etc/openwrt_version", revision + "\n")
    write_file(root, "/etc/banner", "OpenWrt %s, %s (stand-in)\n" % (release, revision))
    write_file(root, "/etc/rc.common", RC_COMMON, 0o755)
    write_file(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/ash\n")
    write_file(root, "/etc/shadow", "root:::0:99999:7:::\n", 0o600)
    write_file(root, "/etc/config/system",
               "config system\n\toption hostname 'OpenWrt'\n\toption timezone 'UTC'\n")


def install_package_manager_files(root, meta, config):
    feeds = meta.get("feeds", [])
    if use_apk(config):
        write_file(root, "/etc/apk/repositories.d/distfeeds.list",
                   "".join(url + "\n" for _, url in feeds))
    else:
        write_file(root, "/etc/opkg/distfeeds.conf",
                   "".join("src/gz %s %s\n" % (name, url) for name, url in feeds))
        write_file(root, "/etc/opkg.conf",
                   "dest root /\ndest ram /tmp\nlists_dir ext /var/opkg-lists\n"
                   "option overlay_root /overlay\noption check_signature\n")


def record_installed(root, order, apk):
    packages = sorted(order, key=lambda p: p["Package"])
    if apk:
        text = "".join("P:%s\nV:%s\n\n" % (p["Package"], p["Version"]) for p in packages)
        write_file(root, "/lib/apk/db/installed", text)
    else:
        text = "".join(
            "Package: %s\nVersion: %s\n%sStatus: install user installed\n"
            "Architecture: %s\n\n" % (
                p["Package"], p["Version"],
                "Depends: %s\n" % p["Depends"] if p.get("Depends") else "",
                p.get("Architecture", "all"))
            for p in packages)
        write_file(root, "/usr/lib/opkg/status", text)
    write_file(root, "/usr/lib/standin/packages",
               "".join("%s %s\n" % (p["Package"], p["Version"]) for p in packages))


def installed_packages(root):
    """[(name, version)] from the stand-in's own list, sorted by name."""
    path = os.path.join(root, "usr/lib/standin/packages")
    with open(path, encoding="utf-8") as f:
        return [tuple(line.split(" ", 1)) for line in f.read().splitlines() if line]


def copy_overlay(source, root):
    """`cp -fpR source/. root`: modes kept, symlinks kept, links in the way replaced."""
    for dirpath, dirnames, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        dest_dir = os.path.normpath(os.path.join(root, rel))
        if os.path.islink(dest_dir):
            os.remove(dest_dir)
        os.makedirs(dest_dir, exist_ok=True)
        shutil.copystat(dirpath, dest_dir)
        for name in sorted(dirnames + filenames):
            src = os.path.join(dirpath, name)
            dest = os.path.join(dest_dir, name)
            if os.path.islink(src):
                if os.path.lexists(dest) and not os.path.isdir(dest):
                    os.remove(dest)
                elif os.path.islink(dest):
                    os.remove(dest)
                os.symlink(os.readlink(src), dest)
                if name in dirnames:
                    dirnames.remove(name)
            elif os.path.isfile(src):
                if os.path.lexists(dest):
                    os.remove(dest)
                shutil.copy2(src, dest)


# ---------------------------------------------------------------- commands


def cmd_package_reload():
    """`package_reload`: index packages/ when it changed, then update every feed's list."""
    apk = use_apk(read_config())
    if pkgs.local_index_stale(apk):
        sys.stderr.write("Package list missing or not up-to-date, generating it.\n")
        sys.stderr.write("Building package index...\n")
        pkgs.build_local_index(apk)
    pkgs.update(apk)


def cmd_package_install():
    meta, config = load_meta(), read_config()
    apk = use_apk(config)
    root = target_dir()
    check_owner("package_install")
    requested = []
    for name in env("BUILD_PACKAGES").split():
        if name not in requested:
            requested.append(name)
    order = pkgs.resolve(pkgs.Universe(pkgs.available()), requested, apk)
    print("Installing packages...")
    for number, package in enumerate(order, 1):
        name, version = package["Package"], package["Version"]
        data = pkgs.fetch_package(package, apk)
        if apk:
            print("(%d/%d) Installing %s (%s)" % (number, len(order), name, version))
        else:
            print("Installing %s (%s) to root..." % (name, version))
        pkgs.unpack_data(data, root)
        install_package_files(root, meta, config, name)
    record_installed(root, order, apk)
    if not apk:
        print("Configuring packages.")


def cmd_prepare_rootfs():
    meta, config = load_meta(), read_config()
    root = target_dir()
    check_owner("prepare_rootfs")
    print("Finalizing root filesystem...")
    # The real prepare_rootfs keeps a copy of the package-only rootfs next to it.
    orig = env("TARGET_DIR_ORIG")
    if orig:
        shutil.rmtree(orig, ignore_errors=True)
        shutil.copytree(root, orig, symlinks=True)
    if env("ADD_LOCAL_KEY") == "1" and config.get("CONFIG_SIGNATURE_CHECK") == "y":
        add_local_key(root, config)
    files = env("USER_FILES")
    if files:
        source = files if os.path.isabs(files) else os.path.join(TOPDIR, files)
        if os.path.isdir(source):
            copy_overlay(source, root)
    partsize = env("CONFIG_TARGET_ROOTFS_PARTSIZE") or config.get("CONFIG_TARGET_ROOTFS_PARTSIZE", "")
    write_file(root, "/usr/lib/standin/build", "".join("%s=%s\n" % pair for pair in [
        ("profile", profile_id()),
        ("rootfs_partsize", partsize),
        ("extra_image_name", env("EXTRA_IMAGE_NAME")),
        ("disabled_services", " ".join(env("DISABLED_SERVICES").split())),
        ("version_code", meta["version_code"]),
    ]))


def add_local_key(root, config):
    if use_apk(config):
        source = os.path.join(TOPDIR, "keys", "local-public-key.pem")
        with open(source, "rb") as f:
            write_file(root, "/etc/apk/keys/local-public-key.pem", f.read())
        return
    with open(os.path.join(TOPDIR, "key-build.pub"), encoding="utf-8") as f:
        text = f.read()
    keyid = text.splitlines()[0].rsplit(" ", 1)[-1]
    write_file(root, "/etc/opkg/keys/" + keyid, text)


def rootfs_tar(root, mtime):
    """A deterministic tar of the staged rootfs: sorted, fixed mtime, owner root."""
    import io
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        paths = []
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root)
                if rel != OWNER_FILE:
                    paths.append(rel)
        for rel in sorted(paths):
            info = tar.gettarinfo(os.path.join(root, rel), arcname="./" + rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "root", "root"
            if info.isreg():
                with open(os.path.join(root, rel), "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def metadata_trailer(meta, dev):
    """Sysupgrade metadata as fwtool appends it: JSON, then a 16-byte `FWx0` trailer."""
    body = json.dumps({
        "metadata_version": "1.1",
        "compat_version": "1.0",
        "supported_devices": dev["supported_devices"],
        "version": {"dist": "OpenWrt", "version": meta["version_number"],
                    "revision": meta["version_code"],
                    "target": "%s/%s" % (meta["board"], meta["subtarget"]),
                    "board": dev["id"]},
    }, sort_keys=True).encode()
    import zlib
    size = len(body) + 16
    trailer = b"FWx0" + zlib.crc32(body).to_bytes(4, "big") + b"\x01\0\0\0" + size.to_bytes(4, "big")
    return body + trailer


def burn_cpu(seconds):
    """Busy work that costs real CPU time, as mksquashfs and friends do."""
    if seconds <= 0:
        return
    block = bytes(1 << 20)
    digest = hashlib.sha256()
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        digest.update(block)


def hold_while_exists(path, limit=60.0):
    """Test hook: park the build here so a test can interleave a second build, no timing.
    `<path>.parked` tells the test that this build has reached the hook."""
    if path and os.path.exists(path):
        with open(path + ".parked", "w") as parked:
            parked.write("%d\n" % os.getpid())
    deadline = time.monotonic() + limit
    while path and os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


def image_bytes(meta, dev, image, tar_bytes):
    header = "STANDIN-IMAGE v1 %s %s %s\n" % (dev["id"], image.get("filesystem", "-"), image["type"])
    payload = header.encode() + tar_bytes
    if image["suffix"].endswith(".gz"):
        import gzip
        import io
        out = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
            gz.write(payload)
        payload = out.getvalue()
    unsigned = payload
    if image.get("metadata"):
        payload = payload + metadata_trailer(meta, dev)
    return payload, unsigned


def cmd_build_image():
    meta, config = load_meta(), read_config()
    dev = device(meta)
    root = target_dir()
    check_owner("build_image")
    print("Building images...")
    kdir_tmp = os.path.join(env("KDIR"), "tmp")
    json_dir = env("JSON_INFO_DIR")
    for path in (kdir_tmp, json_dir):
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
    filesystems = enabled_filesystems(config)
    tar_bytes = rootfs_tar(root, meta["source_date_epoch"])
    burn_cpu(float(os.environ.get("STANDIN_BUILD_CPU_SECONDS", meta.get("build_cpu_seconds", 0))))
    hold_while_exists(env("STANDIN_HOLD_FILE"))
    check_owner("build_image")
    prefix = img_prefix(meta, config)
    device_prefix = prefix + "-" + dev["id"]
    limit = dev.get("image_size_limit")
    for image in dev["images"]:
        fs = image.get("filesystem")
        if fs is not None and fs not in filesystems:
            continue
        name = device_prefix + "-" + image["suffix"]
        data, unsigned = image_bytes(meta, dev, image, tar_bytes)
        path = os.path.join(kdir_tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        print("Image %s: %d bytes" % (name, len(data)))
        if limit is not None and len(data) > limit:
            sys.stderr.write("    WARNING: Image file %s is too big: %d > %d\n" % (path, len(data), limit))
            os.remove(path)
            continue
        shutil.copyfile(path, os.path.join(env("BIN_DIR"), name))
        write_image_info(json_dir, meta, dev, device_prefix, image, name, data, unsigned)
    install_extras(meta, config, dev, prefix, device_prefix, root, tar_bytes)
    check_owner("build_image")


def install_extras(meta, config, dev, prefix, device_prefix, root, tar_bytes):
    bin_dir = env("BIN_DIR")
    if dev.get("kernel_install"):
        with open(os.path.join(env("KDIR"), meta["kernel_file"]), "rb") as f:
            kernel = f.read()
        with open(os.path.join(bin_dir, device_prefix + "-kernel.bin"), "wb") as f:
            f.write(kernel)
    if config.get("CONFIG_TARGET_ROOTFS_TARGZ") == "y":
        import gzip
        out = os.path.join(bin_dir, "%s-%s-rootfs.tar.gz" % (prefix, dev["id"].lower()))
        with open(out, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                gz.write(tar_bytes)
    manifest = os.path.join(bin_dir, "%s-%s.manifest" % (prefix, dev["id"].lower()))
    with open(manifest, "w", encoding="utf-8") as f:
        for name, version in installed_packages(root):
            f.write("%s - %s\n" % (name, version))


def write_image_info(json_dir, meta, dev, device_prefix, image, name, data, unsigned):
    entry = {"name": name, "type": image["type"],
             "sha256": hashlib.sha256(data).hexdigest(),
             "sha256_unsigned": hashlib.sha256(unsigned).hexdigest()}
    if image.get("filesystem") is not None:
        entry["filesystem"] = image["filesystem"]
    if meta.get("image_sizes"):
        entry["size"] = len(data)
    info = {
        "metadata_version": 1,
        "target": "%s/%s" % (meta["board"], meta["subtarget"]),
        "version_code": meta["version_code"],
        "version_number": meta["version_number"],
        "source_date_epoch": meta["source_date_epoch"],
        "profiles": {dev["id"]: {
            "device_packages": dev["device_packages"],
            "image_prefix": device_prefix,
            "images": [entry],
            "supported_devices": dev["supported_devices"],
            "titles": dev["titles"],
        }},
    }
    if meta.get("image_sizes") and dev.get("image_size_limit") is not None:
        info["profiles"][dev["id"]]["file_size_limits"] = {"image": dev["image_size_limit"]}
    with open(os.path.join(json_dir, name + ".json"), "w", encoding="utf-8") as f:
        json.dump(info, f, sort_keys=True)


def cmd_json_overview_image_info():
    meta, config = load_meta(), read_config()
    if config.get("CONFIG_JSON_OVERVIEW_IMAGE_INFO") != "y":
        return
    check_owner("json_overview_image_info")
    json_dir = env("JSON_INFO_DIR")
    output_path = os.path.join(env("BIN_DIR"), "profiles.json")
    output = {}
    if os.path.exists(output_path):
        with open(output_path, encoding="utf-8") as f:
            output = json.load(f)
        if output.get("version_code") != meta["version_code"]:
            output = {}
    for name in sorted(os.listdir(json_dir)):
        with open(os.path.join(json_dir, name), encoding="utf-8") as f:
            info = json.load(f)
        merge_image_info(output, info)
    if not output:
        return
    output["default_packages"] = sorted(meta["default_packages"])
    output["arch_packages"] = meta["arch_packages"]
    if meta.get("linux_kernel"):
        output["linux_kernel"] = meta["linux_kernel"]
    with open(output_path, "w", encoding="utf-8") as f:
        f.write(json.dumps(output, sort_keys=True, separators=(",", ":")))


def merge_image_info(output, info):
    if not output:
        output.update(info)
        return
    for device_id, profile in info["profiles"].items():
        known = output["profiles"].get(device_id)
        if known is None:
            output["profiles"][device_id] = profile
            continue
        images = {image["name"]: image for image in known["images"]}
        for image in profile["images"]:
            images[image["name"]] = image
        known.update({k: v for k, v in profile.items() if k != "images"})
        known["images"] = [images[n] for n in sorted(images)]


def cmd_checksum():
    bin_dir = env("BIN_DIR")
    print("Calculating checksums...")
    lines = []
    for name in sorted(os.listdir(bin_dir), key=lambda n: n.encode()):
        path = os.path.join(bin_dir, name)
        if name == "sha256sums" or not os.path.isfile(path) or os.path.islink(path):
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        lines.append("%s *%s\n" % (digest.hexdigest(), name))
    with open(os.path.join(bin_dir, "sha256sums"), "w", encoding="utf-8") as f:
        f.writelines(lines)


def cmd_manifest():
    config = read_config()
    strip = env("STRIP_ABI") == "1"
    for name, version in installed_packages(target_dir()):
        name = abi_stripped(name) if strip and not use_apk(config) else name
        print(("%s %s" if use_apk(config) else "%s - %s") % (name, version))


def index_by_name():
    """{name: stanza} of every updated feed (the first feed's package wins a name)."""
    index = {}
    for package in pkgs.available():
        index.setdefault(package["Package"], package)
    return index


def depends_names(package):
    return [alternatives[0][0] for alternatives in pkgs.parse_depends(package.get("Depends", ""))]


def cmd_package_list():
    apk = use_apk(read_config())
    meta = load_meta()
    for name, entry in sorted(index_by_name().items()):
        if apk:
            print("%s-%s %s {%s} (GPL-2.0)" % (name, entry["Version"], meta["arch_packages"], name))
        else:
            print("%s - %s - %s" % (name, entry["Version"], entry.get("Size", "0")))


def cmd_package_depends():
    apk = use_apk(read_config())
    index = index_by_name()
    name = env("PACKAGE")
    if name not in index:
        pkgs.report_missing([name], apk)
    if apk:
        print("%s-%s depends on:" % (name, index[name]["Version"]))
        print("\n".join(depends_names(index[name])))
        print()
    else:
        print("%s depends on:" % name)
        for dep in depends_names(index[name]):
            print("\t" + dep)


def cmd_package_whatdepends():
    apk = use_apk(read_config())
    index = index_by_name()
    name = env("PACKAGE")
    users = sorted(n for n, entry in index.items() if name in depends_names(entry))
    if apk:
        for user in users:
            print("%s-%s" % (user, index[user]["Version"]))
        return
    print("Root set:")
    print("  " + name)
    print("What depends on root set")
    for user in users:
        print("\t%s %s\tdepends on %s" % (user, index[user]["Version"], name))


def cmd_begin():
    """Wipe and claim the shared rootfs staging directory for this build."""
    root = target_dir()
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(env("TARGET_DIR_ORIG"), ignore_errors=True)
    os.makedirs(root, exist_ok=True)
    build_id = env("STANDIN_BUILD_ID")
    if build_id:
        with open(os.path.join(root, OWNER_FILE), "w", encoding="utf-8") as f:
            f.write(build_id + "\n")


def cmd_keys():
    """First-run local signing keys. Format-correct but NOT a usable key pair."""
    import base64
    if use_apk(read_config()):
        keys = os.path.join(TOPDIR, "keys")
        for name, label in (("local-private-key.pem", "EC PRIVATE KEY"),
                            ("local-public-key.pem", "PUBLIC KEY")):
            path = os.path.join(keys, name)
            if not os.path.exists(path):
                body = base64.b64encode(os.urandom(91)).decode()
                write_file(keys, name, "-----BEGIN %s-----\n%s\n-----END %s-----\n"
                           % (label, body, label), 0o600 if "private" in name else 0o644)
        return
    if os.path.exists(os.path.join(TOPDIR, "key-build")):
        return
    sys.stderr.write("Generate local signing keys...\n")
    b64 = base64.b64encode
    keynum = os.urandom(8)
    keyid = keynum.hex()
    secret = b"Ed" + b"BK" + bytes(4) + os.urandom(16) + os.urandom(8) + keynum + os.urandom(64)
    public = b"Ed" + keynum + os.urandom(32)
    write_file(TOPDIR, "key-build", "untrusted comment: private key %s\n%s\n"
               % (keyid, b64(secret).decode()), 0o600)
    pub_text = "untrusted comment: public key %s\n%s\n" % (keyid, b64(public).decode())
    write_file(TOPDIR, "key-build.pub", pub_text)
    write_file(TOPDIR, "keys/" + keyid, pub_text)
    sys.stderr.write("Generate local certificate...\n")
    write_file(TOPDIR, "key-build.ucert", b"UCRT" + keynum + os.urandom(64))


COMMANDS = {
    "begin": cmd_begin,
    "keys": cmd_keys,
    "package_reload": cmd_package_reload,
    "package_install": cmd_package_install,
    "prepare_rootfs": cmd_prepare_rootfs,
    "build_image": cmd_build_image,
    "json_overview_image_info": cmd_json_overview_image_info,
    "checksum": cmd_checksum,
    "manifest": cmd_manifest,
    "package_list": cmd_package_list,
    "package_depends": cmd_package_depends,
    "package_whatdepends": cmd_package_whatdepends,
}


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        fail("usage: standin.py {%s}" % ",".join(sorted(COMMANDS)))
    try:
        COMMANDS[argv[1]]()
    except OSError as error:
        # Vanishing or appearing files are the usual sign of a second build in this tree;
        # say so when the staging directory's owner changed, else report the plain error.
        if env("STANDIN_BUILD_ID") and env("TARGET_DIR"):
            check_owner(argv[1])
        fail("ERROR: %s: %s" % (argv[1], error))


if __name__ == "__main__":
    main(sys.argv)
