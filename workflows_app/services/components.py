"""The component-library importer (SPEC section 5): a folder, or the same folder zipped, becomes
workflows (one per sub-folder, upserted by name) and form configs (`_form_confs/*.json`).

A dry run reports what an import would do without writing: per component by name, created,
updated (with the `data` keys that change) or unchanged, and per broken folder the reason it is
skipped. An import is idempotent: a second one reports everything unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Any

from django.db import transaction

from emprops.errors import PayloadTooLarge, ValidationFailed
from workflows_app.models import FormConfig, Workflow

# output types by `form.config.componentGroup`, for new rows of executable types (staff can
# change them in admin); existing rows keep theirs
_GROUP_MIME = {"image": "image/png", "video": "video/mp4", "text": "text/plain",
               "audio": "audio/mpeg"}
# file -> data key
_DATA_FILES = {"form.json": "form", "inputs.json": "inputs", "test.json": "test",
               "workflow.json": "workflow", "api.json": "api", "body.json": "body",
               "job.json": "job", "required_models.json": "models"}
# files that make a folder a component (a zip holding one folder that has none of them is a
# zipped library folder, not a library of one component)
_COMPONENT_MARKERS = frozenset({"form.json", "credits.js"})

# A library is JSON and scripts: a few MiB in practice. The caps refuse zip bombs before
# anything is written.
ZIP_MAX_FILES = 5000
ZIP_MAX_BYTES = 64 * 1024 * 1024
_CHUNK = 64 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


def _empty_report(*, dry_run: bool) -> dict[str, Any]:
    return {"dry_run": dry_run, "created": [], "updated": [], "unchanged": [], "skipped": [],
            "changes": {}, "form_configs": {"created": [], "updated": [], "unchanged": []}}


def _component_type(files: set[str]) -> str | None:
    """The type the files present imply (SPEC section 5), or None when they fit no type."""
    if "form.json" in files:
        if "job.json" in files:
            return Workflow.Type.DIRECT_JOB
        if "workflow.json" in files:
            return Workflow.Type.COMFY_WORKFLOW
        if "api.json" in files:
            return Workflow.Type.FETCH_API
        return None
    if "credits.js" in files and not files & {"workflow.json", "api.json", "job.json"}:
        return Workflow.Type.BASIC
    return None


def _read_component(folder: Path) -> tuple[str, dict[str, Any]]:
    """`(type, data)` of one component folder, or ValueError saying what is wrong."""
    files = {p.name for p in folder.iterdir() if p.is_file()}
    wf_type = _component_type(files)
    if wf_type is None:
        raise ValueError("fits no component type (needs form.json with workflow.json, api.json "
                         "or job.json, or credits.js alone)")
    data: dict[str, Any] = {}
    for filename, key in _DATA_FILES.items():
        if filename not in files:
            continue
        try:
            data[key] = json.loads((folder / filename).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{filename} is not valid JSON ({exc})") from None
    if "form" in data and not isinstance(data["form"], dict):
        raise ValueError("form.json must hold an object")
    if "credits.js" in files:
        try:
            data["credits_script"] = (folder / "credits.js").read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError("credits.js is not UTF-8 text") from None
    return wf_type, data


def _import_form_confs(folder: Path, report: dict[str, Any], *, dry_run: bool) -> None:
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            report["skipped"].append({"name": f"_form_confs/{path.name}",
                                      "reason": f"not valid JSON ({exc})"})
            continue
        with transaction.atomic():
            row = FormConfig.objects.select_for_update().filter(name=path.stem).first()
            if row is not None and row.data == data:
                action = "unchanged"
            else:
                action = "created" if row is None else "updated"
                if not dry_run:
                    FormConfig.objects.update_or_create(name=path.stem, defaults={"data": data})
        report["form_configs"][action].append(path.stem)


def _upsert_component(name: str, wf_type: str, data: dict[str, Any], *,
                      dry_run: bool) -> tuple[str, list[str]]:
    """Create or update one workflow by name (nothing is written in a dry run); returns
    `(created | updated | unchanged, what changes)`."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().filter(name=name).first()
        if workflow is None:
            if not dry_run:
                group = ((data.get("form") or {}).get("config") or {}).get("componentGroup")
                mime = (_GROUP_MIME.get(group) if isinstance(group, str)
                        and wf_type in Workflow.EXECUTABLE_TYPES else None)
                Workflow.objects.create(name=name, label=name, type=wf_type, data=data,
                                        output_mime_type=mime)
            return "created", []
        # keys the folder does not hold (output_node_id, settings made in admin) are kept
        stored = workflow.data or {}
        merged = {**stored, **data}
        changes = [f"data.{key}" for key in sorted(data) if stored.get(key, ...) != data[key]]
        if workflow.type != wf_type:
            changes.insert(0, f"type ({workflow.type} -> {wf_type})")
        if not changes:
            return "unchanged", []
        if not dry_run:
            workflow.data = merged
            workflow.type = wf_type
            workflow.save(update_fields=["data", "type", "updated_at"])
        return "updated", changes


def components_import(*, root: str | Path, dry_run: bool = False) -> dict[str, Any]:
    """Import a component-library folder: one workflow per sub-folder (upserted by name) and
    `_form_confs/*.json` as form configs; with `dry_run`, only report what would change. A broken
    folder is reported by name and skipped; the others still import. Idempotent: a second run
    reports everything unchanged. The report: `{dry_run, created, updated, unchanged: [name],
    skipped: [{name, reason}], changes: {name: [what changes]}, form_configs: {created, updated,
    unchanged}}`."""
    folder = Path(root)
    if not folder.is_dir():
        raise ValidationFailed(f"{folder} is not a folder.", details={"path": ["Not a folder."]})
    report = _empty_report(dry_run=dry_run)
    confs = folder / "_form_confs"
    if confs.is_dir():
        _import_form_confs(confs, report, dry_run=dry_run)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name.startswith(("_", ".")):
            continue
        try:
            wf_type, data = _read_component(sub)
        except (ValueError, OSError) as exc:
            report["skipped"].append({"name": sub.name, "reason": str(exc)})
            continue
        action, changes = _upsert_component(sub.name, wf_type, data, dry_run=dry_run)
        report[action].append(sub.name)
        if changes:
            report["changes"][sub.name] = changes
    return report


# ---- a zipped library ---------------------------------------------------------------------------

def _bad_zip(message: str, entry: str | None = None) -> ValidationFailed:
    return ValidationFailed(message, details={"file": [message], **(
        {"entry": [entry[:300]]} if entry is not None else {})})


def _member_path(name: str) -> PurePosixPath:
    """The relative path a zip entry may be written to, or ValidationFailed (zip slip)."""
    if not name or "\x00" in name or "\\" in name:
        raise _bad_zip("The zip holds an entry with an invalid name.", name)
    if name.startswith("/") or _DRIVE.match(name):
        raise _bad_zip("The zip holds an absolute path.", name)
    path = PurePosixPath(name)
    if any(part == ".." for part in path.parts):
        raise _bad_zip("The zip holds a path that leaves its folder (`..`).", name)
    return path


def components_zip_extract(*, archive: IO[bytes], dest: Path, max_files: int = ZIP_MAX_FILES,
                           max_bytes: int = ZIP_MAX_BYTES) -> Path:
    """Extract a zipped library into the empty folder `dest` and return the library's root (the
    zip's single top folder when it holds only that). ValidationFailed (400) for what is not a
    zip, absolute or `..` paths, links and encrypted entries; PayloadTooLarge (413) past
    `max_files` entries or `max_bytes` uncompressed. Every entry is checked before any is
    written."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise _bad_zip("The file is not a zip archive.") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_files:
            raise PayloadTooLarge(f"The zip holds {len(infos)} entries; the limit is {max_files}.",
                                  details={"file": [f"More than {max_files} entries."]})
        declared = 0
        for info in infos:
            _member_path(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _bad_zip("The zip holds a symbolic link.", info.filename)
            if info.flag_bits & 0x1:
                raise _bad_zip("The zip holds an encrypted entry.", info.filename)
            declared += info.file_size
        if declared > max_bytes:
            raise PayloadTooLarge(
                f"The zip unpacks to {declared} bytes; the limit is {max_bytes}.",
                details={"file": [f"More than {max_bytes} bytes uncompressed."]})
        base = dest.resolve()
        for info in infos:
            target = (base / _member_path(info.filename)).resolve()
            if target != base and base not in target.parents:
                raise _bad_zip("The zip holds a path that leaves its folder.", info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # the declared sizes bound what is written: zipfile never reads an entry past its
            # declared size, and a CRC mismatch (a forged header) is BadZipFile
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            # zipfile raises NotImplementedError for a compression method it cannot read: the
            # upload is refused as damaged, nothing here is unfinished
            except (zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError,
                    zlib.error) as exc:
                raise _bad_zip(f"The zip is damaged ({exc}).", info.filename) from None
    return _library_root(base)


def _library_root(base: Path) -> Path:
    entries = [p for p in base.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        only = entries[0]
        if not any((only / marker).is_file() for marker in _COMPONENT_MARKERS):
            return only
    return base


def components_import_zip(*, archive: IO[bytes], dry_run: bool = False) -> dict[str, Any]:
    """components_import of a zipped library folder, extracted to a temporary folder that is
    removed afterwards; the zip's refusals are components_zip_extract's."""
    tmp = Path(tempfile.mkdtemp(prefix="components-"))
    try:
        root = components_zip_extract(archive=archive, dest=tmp)
        return components_import(root=root, dry_run=dry_run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
