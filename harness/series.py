"""The base tree and the series: make, apply, export, check.

Layout of patches/: one directory per topic part, applied in name order,
NN-<part>/0000-cover-letter.patch followed by the part's patches.  In the
kernel tree a part starts with an empty commit whose message is the cover
letter and carries a "Series-part: <part>" line; git format-patch --always
writes it, git am --empty=keep recreates it, git am --empty=drop (what a
user applying the series runs) skips it.
"""

import filecmp
import hashlib
import json
import os
import re
import shutil
import tempfile

from . import common, deps
from .common import (BASE, BASE_DATE, BASE_TARBALL, BASE_TREE, BUILD, OUT,
                     PATCHES, SERIES_EMAIL, SERIES_NAME, TREE, WORK, Error,
                     Stage, git, git_env, log, run)

BASE_TAG = 'base'
STAMP = os.path.join(WORK, 'tree.json')
TREE_REL = os.path.relpath(TREE, common.TOP)       # build/<base>/linux
PATCHES_REL = os.path.relpath(PATCHES, common.TOP)  # patches/<base>
PART_RE = re.compile(r'^Series-part:\s*([a-z0-9][a-z0-9-]*)\s*$', re.M)


def tag_for(version):
    """The base tag for a package version ('~' cannot be in a git ref)."""
    return 'debian-' + version.replace('~', '_')


def base_tag_name():
    """The tag of the base commit in build/<base>/linux.

    Normally that of the pinned (or BASE_VERSION=) version.  A tree made
    from a newer version because the pinned one had left the package
    index (deps.choose_version) has that version's tag only, and keeps it.
    """
    tag = tag_for(common.BASE_VERSION)
    if os.environ.get('BASE_VERSION') or \
            not os.path.isdir(os.path.join(TREE, '.git')):
        return tag
    tags = git(['tag', '-l', 'debian-*'], check=False).stdout.split()
    return tag if tag in tags or len(tags) != 1 else tags[0]


def patch_files(pdir=PATCHES):
    out = []
    if not os.path.isdir(pdir):
        return out
    for part in sorted(os.listdir(pdir)):
        d = os.path.join(pdir, part)
        if os.path.isdir(d):
            out += [os.path.join(d, f) for f in sorted(os.listdir(d))
                    if f.endswith('.patch')]
    return out


def patches_digest():
    h = hashlib.sha256()
    for p in patch_files():
        h.update(os.path.relpath(p, PATCHES).encode() + b'\0')
        with open(p, 'rb') as f:
            h.update(f.read())
    return h.hexdigest()


def _strip_debian_gitignore(path):
    # Debian's tarball appends a block that ignores every top-level entry
    # ("/*"); with it "git add" silently skips new files.  It is not part of
    # upstream's .gitignore, so the base commit drops it.
    with open(path) as f:
        text = f.read()
    marker = '#\n# Debian packaging: ignore everything at the top level'
    i = text.find(marker)
    if i >= 0:
        with open(path, 'w') as f:
            f.write(text[:i].rstrip('\n') + '\n')


def make_base():
    """Extract the pinned tarball into a git repository with a fixed commit."""
    tag = base_tag_name()
    if os.path.isdir(os.path.join(TREE, '.git')):
        res = git(['rev-parse', '-q', '--verify', f'refs/tags/{tag}'],
                  check=False)
        if res.returncode == 0:
            return res.stdout.strip()
        raise Error(f'{TREE} exists but has no tag {tag}: it was made from '
                    'another base version. Export any work (make export), '
                    f'then remove {os.path.relpath(TREE, common.TOP)} and '
                    'run make tree again.')
    deps.ensure()
    version = common.BASE_VERSION
    tag = tag_for(version)
    with Stage(f'base tree from {os.path.basename(BASE_TARBALL)} '
               f'{version}'):
        tmp = TREE + '.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        run(['tar', '-xf', BASE_TARBALL, '-C', tmp])
        src = os.path.join(tmp, f'linux-source-{BASE}')
        _strip_debian_gitignore(os.path.join(src, '.gitignore'))
        env = git_env({'GIT_AUTHOR_DATE': BASE_DATE,
                       'GIT_COMMITTER_DATE': BASE_DATE})
        git(['init', '-q', '-b', 'series'], cwd=src, env=env)
        git(['add', '-A', '-f', '.'], cwd=src, env=env)
        git(['commit', '-q', '-m',
             f'Debian {deps.BASE_PACKAGE} {version}\n\n'
             f'Unpacked {os.path.basename(BASE_TARBALL)} from the Debian '
             f'package {deps.BASE_PACKAGE}\nversion {version}, with '
             'the Debian packaging block removed from .gitignore.\n'],
            cwd=src, env=env)
        git(['tag', tag], cwd=src, env=env)
        # Commits made by hand in the tree carry the series identity.
        git(['config', 'user.name', SERIES_NAME], cwd=src)
        git(['config', 'user.email', SERIES_EMAIL], cwd=src)
        os.rename(src, TREE)
        shutil.rmtree(tmp)
    sha = git(['rev-parse', 'HEAD']).stdout.strip()
    log(f'base commit {sha} (tag {tag})')
    return sha


def _read_stamp():
    try:
        with open(STAMP) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_stamp():
    head = git(['rev-parse', 'HEAD']).stdout.strip()
    with open(STAMP, 'w') as f:
        json.dump({'head': head, 'patches': patches_digest(),
                   'base': base_tag_name()}, f)


def tree_dirty(cwd=TREE):
    return git(['status', '--porcelain'], cwd=cwd).stdout.strip()


def apply_series(tree=TREE):
    """Reset the tree to the base and git am every patch, covers kept."""
    files = patch_files()
    git(['checkout', '-q', '-B', 'series', base_tag_name()], cwd=tree)
    git(['reset', '-q', '--hard', base_tag_name()], cwd=tree)
    if not files:
        return
    res = git(['am', '-q', '--empty=keep', '--committer-date-is-author-date']
              + files, cwd=tree, check=False)
    if res.returncode != 0:
        cur = git(['am', '--show-current-patch=diff'], cwd=tree,
                  check=False).stdout[:2000]
        git(['am', '--abort'], cwd=tree, check=False)
        raise Error('git am failed:\n' + res.stdout + res.stderr +
                    f'\n(current patch starts)\n{cur}')


def make_tree(force=False, keep_work=False):
    """The kernel work tree: base plus patches/, safe to rerun.

    If the tree holds work that patches/ does not, fail (or, with
    keep_work, build and test that work as it is, with a warning).
    """
    make_base()
    st = _read_stamp()
    head = git(['rev-parse', 'HEAD']).stdout.strip()
    if st.get('head') == head and not tree_dirty():
        if st.get('patches') == patches_digest():
            log(f'tree up to date: {TREE} at {head[:12]}')
            return
    elif not force and st:
        # The tree moved since the series was applied: keep that work unless
        # patches/ already holds it.
        diff = export_diff()
        if diff and keep_work:
            log(f'WARNING: using {TREE_REL} as it is; it has work that '
                f'is not in {PATCHES_REL}/ (make export, then commit '
                f'{PATCHES_REL}/):\n' + diff)
            return
        if diff:
            raise Error(f'{TREE_REL} has work that is not in '
                        f'{PATCHES_REL}/:\n' + diff + '\nRun "make export" '
                        'to keep it, or '
                        '"make tree FORCE=1" to throw it away.')
    with Stage(f'apply {PATCHES_REL}/ to the base tree'):
        apply_series()
        _write_stamp()
    n = len(git(['rev-list', f'{base_tag_name()}..HEAD']).stdout.split())
    log(f'tree ready: {n} commits on {base_tag_name()}')


def commits(tree=TREE):
    out = git(['rev-list', '--reverse', f'{base_tag_name()}..HEAD'],
              cwd=tree).stdout.split()
    return out


def is_empty(sha, tree=TREE):
    res = git(['diff', '--quiet', f'{sha}^', sha], cwd=tree, check=False)
    return res.returncode == 0


def parts(tree=TREE):
    """[(part name, [commits])] with each part's cover commit first."""
    result = []
    for sha in commits(tree):
        if is_empty(sha, tree):
            msg = git(['log', '-1', '--format=%B', sha], cwd=tree).stdout
            m = PART_RE.search(msg)
            if not m:
                raise Error(f'empty commit {sha[:12]} has no '
                            '"Series-part: <name>" line; every part starts '
                            'with such a cover commit')
            result.append((m.group(1), [sha]))
        elif not result:
            raise Error(f'commit {sha[:12]} comes before any cover commit; '
                        'start the series with an empty commit carrying '
                        '"Series-part: <name>"')
        else:
            result[-1][1].append(sha)
    return result


FORMAT_ARGS = ['format-patch', '-q', '--always', '--zero-commit',
               '--no-signature', '--no-numbered', '--abbrev=12',
               '--start-number', '0']


def export_to(dest, tree=TREE):
    """Write the tree's series under dest (which must be empty)."""
    for i, (name, shas) in enumerate(parts(tree), 1):
        d = os.path.join(dest, f'{i:02d}-{name}')
        git(['-c', 'diff.algorithm=myers', '-c', 'diff.renames=true',
             '-c', 'core.quotepath=true'] + FORMAT_ARGS +
            ['-o', d, f'{shas[0]}^..{shas[-1]}'], cwd=tree)
        first = sorted(os.listdir(d))[0]
        os.rename(os.path.join(d, first),
                  os.path.join(d, '0000-cover-letter.patch'))


def _tree_diff(a, b):
    """Human-readable list of differences between two patch directories."""
    lines = []

    def walk(rel):
        da, db = os.path.join(a, rel), os.path.join(b, rel)
        na = set(os.listdir(da)) if os.path.isdir(da) else set()
        nb = set(os.listdir(db)) if os.path.isdir(db) else set()
        for n in sorted(na | nb):
            r = os.path.join(rel, n) if rel else n
            pa, pb = os.path.join(a, r), os.path.join(b, r)
            if os.path.isdir(pa) or os.path.isdir(pb):
                walk(r)
            elif n not in na:
                lines.append(f'  only in {PATCHES_REL}/: {r}')
            elif n not in nb:
                lines.append(f'  only in the tree: {r}')
            elif not filecmp.cmp(pa, pb, shallow=False):
                lines.append(f'  differs: {r}')
    walk('')
    return lines


def export_diff(tree=TREE):
    """'' when patches/<base> matches the tree, else what differs."""
    with tempfile.TemporaryDirectory() as tmp:
        export_to(tmp, tree)
        lines = _tree_diff(tmp, PATCHES)
    dirty = tree_dirty(tree)
    if dirty:
        lines.append(f'  uncommitted changes in {TREE_REL}:')
        lines += ['    ' + line for line in dirty.splitlines()[:20]]
    return '\n'.join(lines)


def export():
    if not os.path.isdir(os.path.join(TREE, '.git')):
        raise Error('no kernel tree: run "make tree" first')
    if tree_dirty():
        raise Error(f'{TREE_REL} has uncommitted changes; commit them '
                    f'(git -C {TREE_REL} commit) before exporting:\n' +
                    tree_dirty())
    tmp = PATCHES + '.new'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    export_to(tmp)
    changes = _tree_diff(tmp, PATCHES)
    shutil.rmtree(PATCHES, ignore_errors=True)
    os.rename(tmp, PATCHES)
    _write_stamp()
    if changes:
        log(f'{PATCHES_REL}/ updated:\n' + '\n'.join(changes))
    else:
        log(f'{PATCHES_REL}/ already matched the tree; nothing changed')


def export_check():
    if not os.path.isdir(os.path.join(TREE, '.git')):
        raise Error('no kernel tree: run "make tree" first')
    diff = export_diff()
    if diff:
        first = (f'commit the work in {TREE_REL} (git -C {TREE_REL} '
                 'commit -as), then run ' if tree_dirty() else 'Run ')
        raise Error(f'{PATCHES_REL}/ and {TREE_REL} disagree:\n' + diff +
                    f'\n{first}"make export" to write the tree to '
                    f'{PATCHES_REL}/ (then commit {PATCHES_REL}/), or "make '
                    f'tree FORCE=1" to reset the tree to {PATCHES_REL}/ (the '
                    'work is lost).')
    log(f'{PATCHES_REL}/ matches {TREE_REL}')


def added_files(patch):
    """Paths a patch file creates (new or renamed-to)."""
    added, prev = [], ''
    with open(patch, errors='replace') as f:
        for line in f:
            if line.startswith('+++ b/') and prev.startswith('--- /dev/null'):
                added.append(line[6:].strip())
            elif line.startswith('rename to '):
                added.append(line[10:].strip())
            prev = line
    return added


def maintainer_sections(path):
    """MAINTAINERS sections get_maintainer.pl names for path, less THE REST."""
    res = run(['perl', 'scripts/get_maintainer.pl', '--no-git',
               '--no-git-fallback', '--sections', '-f', path], cwd=TREE,
              capture=True, check=False, quiet=True)
    if res.returncode != 0:
        return []
    return [ln.strip() for ln in res.stdout.splitlines()
            if ln.strip() and not re.match(r'^[A-Z]:\t', ln) and
            ln.strip() != 'THE REST']


def defined_in_base(name):
    """Whether the base tree #defines @name in a header (any directory)."""
    res = git(['grep', '-q', '-w', '-E', rf'^\s*#\s*define\s+{name}\b',
               base_tag_name(), '--', '*.h'], cwd=TREE, check=False)
    return res.returncode == 0


def checkpatch(files):
    """checkpatch --strict on each non-cover patch; return failures.

    Every message fails the patch but two: "added, moved or deleted
    file(s), does MAINTAINERS need updating?" (FILE_PATH_CHANGES), which
    is answered when get_maintainer.pl names an existing MAINTAINERS
    section, other than THE REST, for every file the patch adds; and
    "Avoid CamelCase: <X>" (CAMELCASE) for an X the base already defines
    in a header, such as arm64's MT_S2_DEVICE_nGnRE: checkpatch learns
    existing names from include/ only, and a patch cannot rename them.
    """
    bad = []
    cp = os.path.join(TREE, 'scripts', 'checkpatch.pl')
    for p in files:
        if p.endswith('0000-cover-letter.patch'):
            continue
        # From inside the kernel tree, where patches/ is not tracked:
        # checkpatch treats a git-tracked path as a source file.  With
        # the tree (no --no-tree), as a maintainer runs it: the SPDX
        # check (python3-ply) and the tree-aware checks take part.
        # Debian's python3 first: scripts/spdxcheck.py needs its ply.
        env = dict(os.environ, PATH='/usr/bin:' + os.environ.get('PATH', ''))
        res = run(['perl', cp, '--strict', '--terse', '--show-types', p],
                  cwd=TREE, env=env, capture=True, check=False, quiet=True)
        if 'spdxcheck' in res.stderr:
            raise Error('checkpatch could not run scripts/spdxcheck.py '
                        f'({res.stderr.strip().splitlines()[-1]}); install '
                        'python3-ply (make deps)')
        rel = os.path.relpath(p, PATCHES)
        types = set(re.findall(r'(?:ERROR|WARNING|CHECK):(\w+):', res.stdout))
        camel = re.findall(r'CHECK:CAMELCASE: Avoid CamelCase: <(\w+)>',
                           res.stdout)
        if camel and all(defined_in_base(n) for n in set(camel)):
            log(f'checkpatch: {rel}: CamelCase the base already defines, '
                'not counted: ' + ', '.join(sorted(set(camel))))
            types.discard('CAMELCASE')
            if not types:
                log(f'checkpatch: {rel}: ok')
                continue
        if res.returncode != 0 and types == {'FILE_PATH_CHANGES'}:
            cover = {f: maintainer_sections(f) for f in added_files(p)}
            orphans = [f for f, secs in cover.items() if not secs]
            if not orphans:
                log(f'checkpatch: {rel}: ok (MAINTAINERS already covers ' +
                    '; '.join(f'{f}: {secs[0]}' for f, secs in
                              cover.items()) + ')')
                continue
            res.stdout += ('\nno MAINTAINERS section but THE REST covers: ' +
                           ', '.join(orphans) + ' (add an entry for them)')
        if res.returncode != 0:
            bad.append(rel)
            log(f'checkpatch: {rel}: FAIL\n{res.stdout.strip()}')
        else:
            log(f'checkpatch: {rel}: ok')
    return bad


def changed(sha, tree):
    """The paths a commit changes."""
    return git(['diff', '--name-only', f'{sha}^', sha],
               cwd=tree).stdout.split()


# What only KVM's host side compiles: a patch that touches nothing else
# is built in the host flavour alone.  Any other kernel file may be code
# the host flavour leaves out (it has neither CONFIG_KVM_GUEST nor the
# SDEI client), so such a prefix is built in the guest flavour too.
HOST_ONLY = ('arch/arm64/kvm/', 'virt/kvm/', 'include/kvm/', 'tools/',
             'Documentation/', 'MAINTAINERS')


def guest_side(names):
    """Do these changed paths need the guest flavour built as well?"""
    return any(not n.startswith(HOST_ONLY) for n in names)


def check_series(kbuild, start_part=None):
    """checkpatch every patch and build every prefix of the series.

    The prefixes are checked out in build/linux itself and built
    incrementally in the same output directory as "make build", so each
    step recompiles only what its patch touched.  The tree must match
    patches/ (nothing to lose); it is put back on its branch afterwards.
    With start_part (a part's name, as in its cover's "Series-part:"),
    every patch is still checkpatched, but only the prefixes from that
    part on are built.  A prefix whose patch changes kernel files outside
    KVM's host side (guest_side()) is built in the guest flavour as well.
    """
    make_tree()
    shas = commits()
    first = 0
    if start_part:
        covers = {name: c[0] for name, c in parts()}
        if start_part not in covers:
            raise Error(f'no part {start_part!r} in the series; parts: '
                        + ', '.join(covers))
        first = shas.index(covers[start_part])
        log(f'building the prefixes from part {start_part} on '
            f'({len(shas) - first} of {len(shas)} commits); the '
            f'{first} before it are checkpatched only')
    bad = checkpatch(patch_files())
    failed = []
    out = os.path.join(OUT, 'host')
    st_out = os.path.join(OUT, 'check-series')
    branch = git(['symbolic-ref', '-q', '--short', 'HEAD'],
                 check=False).stdout.strip() or 'series'
    try:
        # Selftests that do not build on the base itself (the reason for
        # the prep part) may still fail at a prefix; any other may not.
        git(['checkout', '-q', '--detach', base_tag_name()])
        base_missing = kbuild.selftests_missing(TREE, st_out)
        log('selftests that do not build on the base: ' +
            (', '.join(sorted(base_missing)) or 'none'))
        for n, sha in enumerate(shas, 1):
            subj = git(['log', '-1', '--format=%s', sha]).stdout.strip()
            if is_empty(sha) or n <= first:
                continue
            git(['checkout', '-q', '--detach', sha])
            names = changed(sha, TREE)
            tools = any(n.startswith('tools/') for n in names)
            kernel = any(not n.startswith('tools/') for n in names)
            with Stage(f'prefix {n}/{len(shas)}: {subj}'):
                try:
                    if kernel:
                        kbuild.build_kernel(TREE, out, flavour='host')
                    if guest_side(names):
                        kbuild.build_kernel(TREE, os.path.join(OUT, 'guest'),
                                            flavour='guest')
                    if tools:
                        missing = kbuild.selftests_missing(TREE, st_out)
                        if not missing <= base_missing:
                            raise Error('selftests that built on the base '
                                        'no longer build: ' + ', '.join(
                                            sorted(missing - base_missing)))
                except Error as e:
                    log(str(e))
                    failed.append(f'{n:04d} {subj}')
    finally:
        git(['checkout', '-q', branch])
    if bad or failed:
        raise Error('check-series failed:\n' +
                    ''.join(f'  checkpatch: {b}\n' for b in bad) +
                    ''.join(f'  does not build: {f}\n' for f in failed))
    log(f'check-series: {len(shas)} commits, checkpatch clean, every prefix '
        + (f'from part {start_part} on ' if start_part else '') + 'builds')


def base_worktree():
    """A worktree of the bare base, for the baseline."""
    make_base()
    if not os.path.isdir(BASE_TREE):
        git(['worktree', 'add', '-q', '--detach', BASE_TREE,
             base_tag_name()])
    else:
        git(['checkout', '-q', '--detach', base_tag_name()], cwd=BASE_TREE)
    return BASE_TREE



def newest_check():
    """Does each base's series apply to the newest version apt offers?

    Debian's security archive replaces linux-source-<base> versions as
    they come; this tells, before the pinned one disappears, whether
    moving the pin would need the series rebased.  Each newest version's
    package is downloaded (not installed) into build/newest/, its tarball
    unpacked, and every patch of patches/<base>/ applied in order with
    git apply.  Prints TAP; returns the number of failures.
    """
    dl = os.path.join(BUILD, 'newest')
    os.makedirs(dl, exist_ok=True)
    if os.geteuid() == 0:
        deps.apt_update()
    lines, failed = [], 0
    for n, base in enumerate(common.BASES, 1):
        pkg = f'linux-source-{base}'
        pinned = common.BASES[base]['version']
        pdir = os.path.join(common.TOP, 'patches', base)
        files = [f for f in patch_files(pdir) if _has_diff(f)]
        vers = deps.available_versions(pkg)
        latest = deps.newest(vers)
        name = f'newest/{base}'
        if not latest:
            failed += 1
            lines.append(f'not ok {n} {name} # {pkg} is not in the package '
                         'index: check the apt sources')
            continue
        if not files:
            lines.append(f'ok {n} {name} # SKIP no series for {base} in '
                         f'patches/{base}/ yet (newest {latest})')
            continue
        with Stage(f'{pkg} {latest}: apply patches/{base}/'):
            err = _apply_to_package(pkg, latest, files, dl)
        pin = ('the pinned version' if latest == pinned
               else f'pinned {pinned}')
        if err:
            failed += 1
            lines.append(f'not ok {n} {name} # {latest} ({pin}): {err}')
        else:
            lines.append(f'ok {n} {name} # {latest} ({pin}): all '
                         f'{len(files)} patches apply')
    print('TAP version 13\n1..' + str(len(common.BASES)) + '\n' +
          '\n'.join(lines), flush=True)
    return failed


def _has_diff(path):
    with open(path, errors='replace') as f:
        return any(line.startswith('diff --git ') for line in f)


def _apply_to_package(pkg, version, files, dl):
    """'' if every patch applies to that version's tarball, else why not."""
    work = os.path.join(dl, f'{pkg}_{version}'.replace('~', '_'))
    src = os.path.join(work, 'src')
    if not os.path.isdir(src):
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        res = run(['apt-get', '-o', 'APT::Sandbox::User=root', 'download',
                   f'{pkg}={version}'], cwd=work, check=False)
        debs = [f for f in os.listdir(work) if f.endswith('.deb')]
        if res.returncode != 0 or not debs:
            return f'cannot download {pkg}={version} (apt-get download)'
        run(['dpkg-deb', '-x', debs[0], 'deb'], cwd=work, quiet=True)
        tarball = os.path.join(work, 'deb', 'usr', 'src', f'{pkg}.tar.xz')
        tmp = src + '.tmp'
        os.makedirs(tmp)
        run(['tar', '-xf', tarball, '-C', tmp])
        os.rename(os.path.join(tmp, pkg), src)
        os.rmdir(tmp)
        shutil.rmtree(os.path.join(work, 'deb'))
        for f in debs:
            os.remove(os.path.join(work, f))
        # A clean copy stays in src/; each check applies to a fresh copy.
    trial = os.path.join(work, 'trial')
    shutil.rmtree(trial, ignore_errors=True)
    run(['cp', '-a', src, trial], quiet=True)
    try:
        for f in files:
            res = run(['git', 'apply', '--whitespace=nowarn', f], cwd=trial,
                      check=False, capture=True, quiet=True)
            if res.returncode != 0:
                msg = (res.stderr.strip().splitlines() or ['failed'])[0]
                return (f'{os.path.relpath(f, common.TOP)} does not apply '
                        f'({msg})')
        return ''
    finally:
        shutil.rmtree(trial, ignore_errors=True)
