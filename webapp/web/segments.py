"""Dashboard: segments list, segment page, members, bulk add.

Every change made on the segment page answers with ``HX-Trigger: segment-changed``; the parts
of the page that summarise the segment (stat cards and chart, recent changes) listen for it
and fetch themselves again, so the page agrees with itself without a reload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from flask import flash, make_response, redirect, render_template, request, url_for

from webapp.errors import AppError, NotFound, ValidationFailed
from webapp.http.auth import dashboard_actor
from webapp.http.transaction import abandon, transactional
from webapp.models import BulkOperation
from webapp.models.enums import Reason
from webapp.platform.extensions import db
from webapp.rules import MAX_BULK_IDS, MAX_USER_ID
from webapp.services import impact
from webapp.services.common import ascii_int, parse_user_id
from webapp.services.history import segment as segment_activity
from webapp.services.membership import bulk, user_changes
from webapp.services.reads import reach
from webapp.services.rollout import buckets as rollout
from webapp.services.segments import lifecycle as segments
from webapp.services.segments import rollout_state
from webapp.web import deleted
from webapp.web.blueprint import bp
from webapp.web.helpers import (
    TTL_CHOICES,
    catalog_moved,
    confirmed_version,
    form_expiry,
    is_htmx,
    live_segment,
    rejected,
    typed_user_id,
    updated,
)
from webapp.web.id_lists import ParsedIds, parse_file, parse_pasted
from webapp.web.messages import FormErrors, error_words, form_errors, problem_words

PER_PAGE = 25
MEMBERS_PAGE = 25
SAMPLE = 10_000
CHANGED = "segment-changed"  # the HX-Trigger event of every change on the segment page
CREATE_FIELDS = ("slug", "description", "rollout_percent")
SETTINGS_FIELDS = ("description", "rollout_percent", "exclusion_group")
BULK_FIELDS = ("user_ids", "file", "ttl_seconds", "expires_at")


def _listing() -> dict:
    q = request.args.get("q", "").strip()[:200]
    page = ascii_int(request.args.get("page"), 1, 1_000_000) or 1
    items, total = segments.list_segments(db.session, q, page, PER_PAGE)
    counts = reach.member_counts(db.session, [s.id for s in items])  # cached (webapp.services.reads.reach)
    pages = max(1, -(-total // PER_PAGE))
    return {"segments": items, "counts": counts, "total": total, "q": q, "page": page, "pages": pages}


@bp.get("/")
def index():
    context = _listing()
    if is_htmx() and request.headers.get("HX-Target") == "segment-table":
        return render_template("segments/_table.html", **context)
    return render_template("segments/index.html", form={}, errors={}, **context)


@bp.post("/segments")
@transactional
def create_segment():
    form = request.form
    try:
        segment = segments.create_segment(
            db.session,
            (form.get("use_slug") or form.get("slug", "")).strip(),
            form.get("description"),
            form.get("rollout_percent", "").strip() or None,
            actor=dashboard_actor(),
        )
    except AppError as exc:
        errors = form_errors(exc, CREATE_FIELDS, values=request.form)
        taken = next((str(d.get("slug")) for d in exc.details if d.get("code") == "slug_taken"), None)
        if taken:  # the segment that has the slug, one click away
            errors.links["slug"] = (url_for("web.show_segment", slug=taken), f"Open {taken}")
        return rejected(errors, url_for("web.index"), "segments/_create_form.html")
    return updated(
        f"Segment {segment.slug} created.",
        url_for("web.index"),
        "segments/_create_form.html",
        "segments/_table_oob.html",
        form={},
        errors={},
        **_listing(),
    )


@bp.get("/segments/<slug>")
def show_segment(slug: str):
    try:
        segment = live_segment(slug)
    except NotFound:  # no live segment: a deleted one's page, if one was deleted
        seen = deleted.deleted_or_none(slug)
        if seen is None:
            raise
        return deleted.deleted_page(seen)
    return render_template("segments/show.html", **page_context(segment))


def page_context(segment) -> dict:
    """Everything the segment page shows: one context per part of the page."""
    return {
        **_summary_context(segment),
        **_recent_context(segment),
        **_settings_context(segment),
        **_members_context(segment),
        "errors": {},
        "form": {},
        "schedule_form": {},  # the schedule card's and the bulk card's own values (``form`` is the settings')
        "bulk_form": {},
        "ttl_choices": TTL_CHOICES,
    }


def _settings_context(segment, typed: Mapping[str, str] | None = None, *, refused: bool = False) -> dict:
    """The settings form's rollout preview. It describes what the fields hold: the saved values
    (``typed`` None: a fresh form or one just saved), else the values ``typed`` in the form (a
    save asked to confirm, or refused) — rollout percentage and exclusion group, exactly as the
    live preview shows them while typing. After a refusal a value the save refuses is said once,
    by the field's own problem, and the preview stays empty."""
    if typed is None:
        return {
            "segment": segment,
            "sample": SAMPLE,
            "basis_points": segment.rollout_basis_points,
            "sample_in": rollout_state.preview_share(
                db.session, segment, segment.rollout_basis_points, SAMPLE
            ),
            "limits": impact.limits(db.session, segment),
            "impact": None,
        }
    context = _preview_context(segment, typed)
    if "problem" in context and refused:
        return {"segment": segment, "no_preview": True}
    return {"segment": segment, **context}


def _summary_context(segment) -> dict:
    """The stat cards and the 30-day chart (``segments/_summary.html``)."""
    return {
        "segment": segment,
        "stats": segments.segment_stats(db.session, segment),
        "series": segment_activity.member_series(db.session, segment),
    }


def _recent_context(segment) -> dict:
    """The recent membership changes (``segments/_recent.html``)."""
    return {"segment": segment, "events": segment_activity.recent_events(db.session, segment)}


@bp.get("/segments/<slug>/summary")
def segment_summary(slug: str):
    """Stat cards and chart, fetched again when the page hears ``segment-changed``."""
    return render_template("segments/_summary.html", **_summary_context(live_segment(slug)))


@bp.get("/segments/<slug>/recent")
def segment_recent(slug: str):
    """Recent changes, fetched again when the page hears ``segment-changed``."""
    return render_template("segments/_recent.html", **_recent_context(live_segment(slug)))


def _members_context(segment, args=None) -> dict:
    """One page of members from the query string (``after`` cursor, ``user_id`` filter);
    a filter that is not a user id is explained beside the filter, not as an error."""
    args = request.args if args is None else args
    after = ascii_int(args.get("after"), 0, MAX_USER_ID) or 0
    find = args.get("user_id", "").strip()
    find_problem = None
    user_id = None
    if find:
        try:
            user_id = typed_user_id(find)
        except ValidationFailed as exc:
            find_problem = exc.details[0]["message"]
    rows = (
        []
        if find_problem
        else segments.list_members(db.session, segment, after=after, limit=MEMBERS_PAGE, user_id=user_id)
    )
    next_after = rows[-1].user_id if len(rows) == MEMBERS_PAGE else None
    return {
        "members": rows,
        "next_after": next_after,
        "after": after,
        "find": find,
        "find_problem": find_problem,
    }


@bp.get("/segments/<slug>/members")
def members(slug: str):
    segment = live_segment(slug)
    if not is_htmx():
        where = url_for(
            "web.show_segment",
            slug=slug,
            after=request.args.get("after"),
            user_id=request.args.get("user_id"),
        )  # (None values are left out)
        return redirect(where + "#members")
    return render_template("segments/_members.html", segment=segment, **_members_context(segment))


@bp.get("/segments/<slug>/rollout-preview")
def rollout_preview(slug: str):
    """The live preview beside the rollout field: the group's true limits, and what saving the
    typed value (and group) would do now (services.impact: never a value the save refuses)."""
    segment = live_segment(slug)
    return render_template("segments/_rollout_preview.html", **_preview_context(segment, request.args))


def _typed_group(args) -> str | None | object:
    """The exclusion group typed in the settings form: UNSET when not sent or unchanged."""
    if "exclusion_group" not in args:
        return segments.UNSET
    return args.get("exclusion_group", "").strip()


def _preview_context(segment, args: Mapping[str, str]) -> dict:
    """What the rollout preview shows for the typed values (percentage and group): a problem in
    plain words (a value the save would refuse, with the true ceiling), else the group's limits,
    how many of user ids 1..SAMPLE the typed percentage covers in the typed group, and the impact."""
    typed = (args.get("rollout_percent", "") or "").strip() or "0"
    group = _typed_group(args)
    try:
        basis_points = rollout.percent_to_basis_points(typed)
        found = impact.preview_update(db.session, segment.slug, rollout_percent=typed, exclusion_group=group)
    except AppError as exc:
        return {"problem": error_words(exc.message, exc.details)[0]}
    except ValueError as exc:
        return {"problem": problem_words(exc, "rollout_percent")}
    target = segment.exclusion_group if group is segments.UNSET else (group or None)
    return {
        "limits": impact.limits(db.session, segment, target),
        "sample": SAMPLE,
        "basis_points": basis_points,
        "sample_in": rollout_state.preview_share(db.session, segment, basis_points, SAMPLE, target),
        "impact": found,
    }


def _confirm_key(form: Mapping[str, str]) -> str:
    """The values a confirmation's numbers were computed for: a Confirm sent with other values
    in the fields (typed after the numbers were shown) is asked again with their numbers."""
    return f"{form.get('rollout_percent', '').strip()}|{form.get('exclusion_group', '').strip()}"


def _settings_answer(segment, found: impact.Impact, *, changed_since: bool = False):
    """The settings form again with the change's impact to confirm (nothing saved)."""
    context = {
        **_settings_context(segment, request.form),
        "impact": None,  # the confirmation below the fields says it
        "form": request.form,
        "errors": {},
        "confirm": found,
        "confirm_key": _confirm_key(request.form),
        "changed_since": changed_since,
    }
    if is_htmx():
        return render_template("segments/_settings_form.html", **context)
    return render_template("segments/show.html", **{**page_context(segment), **context})


@bp.post("/segments/<slug>/settings")
@transactional
def update_settings(slug: str):
    """Save the settings; a change that takes anyone out of a segment is first shown with its
    numbers (services.impact) and saved only once confirmed, against the catalog version those
    numbers were computed on: if the segments changed since, the new numbers are shown instead."""
    form = request.form
    back = url_for("web.show_segment", slug=slug)
    group = form["exclusion_group"].strip() if "exclusion_group" in form else segments.UNSET
    percent = form.get("rollout_percent", "").strip() or 0
    confirmed = confirmed_version(form)
    if confirmed is not None and form.get("confirmed_values", _confirm_key(form)) != _confirm_key(form):
        confirmed = None  # the fields changed since the numbers were shown: new numbers
    try:
        if confirmed is None:
            found = impact.preview_update(db.session, slug, rollout_percent=percent, exclusion_group=group)
            if found.leaving:
                return _settings_answer(live_segment(slug), found)
        segment, _ = segments.update_segment(
            db.session,
            slug,
            description=form.get("description", ""),
            rollout_percent=percent,
            exclusion_group=group,
            actor=dashboard_actor(),
            expected_version=confirmed,
        )
    except AppError as exc:
        if catalog_moved(exc):
            abandon()
            found = impact.preview_update(db.session, slug, rollout_percent=percent, exclusion_group=group)
            return _settings_answer(live_segment(slug), found, changed_since=True)
        return rejected(
            exc,
            back,
            "segments/_settings_form.html",
            fields=SETTINGS_FIELDS,
            **_settings_context(live_segment(slug), form, refused=True),
        )
    return updated(
        f"{segment.slug} saved.",
        back,
        "segments/_settings_form.html",
        form={},
        errors={},
        trigger=CHANGED,
        **_settings_context(segment),
    )


@bp.post("/segments/<slug>/members")
@transactional
def add_members(slug: str):
    """Bulk add from pasted ids and/or a file: both are used; any token that is not a user id
    (each named with its line) and nothing is added. In an exclusion group, ids already in
    another segment of the group refuse the add with their count, segments and a sample under
    the field they came from, a download of them and a button that adds the others
    (``skip_conflicts``); a file that was read fine stays chosen (``hx-preserve``)."""
    back = url_for("web.show_segment", slug=slug)
    segment = live_segment(slug)
    context: dict[str, Any] = {"segment": segment, "ttl_choices": TTL_CHOICES}
    errors, parts, file_name = _bulk_ids()
    try:
        ttl, until = form_expiry()
    except ValidationFailed as exc:
        _place(errors, exc)
    ids = [user_id for part in parts for user_id in part.ids]
    if not errors and len(ids) > MAX_BULK_IDS:
        errors.add(
            "user_ids",
            f"The pasted ids and the file hold {len(ids):,} ids together; at most "
            f"{MAX_BULK_IDS:,} can be added at once.",
        )
    # a file read without problems stays chosen in the browser when the form comes back refused
    context.update(file_name=file_name, keep_file=bool(file_name) and "file" not in errors.fields)
    if errors:
        return rejected(errors, back, "segments/_bulk_form.html", **context)
    try:
        result = _with_expiry(
            bulk.bulk_add, slug, ids, ttl, until, skip_conflicts=request.form.get("skip_conflicts") == "yes"
        )
    except bulk.GroupConflict as exc:
        errors, conflict = _conflict_errors(exc.conflicts, parts, len(set(ids)))
        others = set(ids) - set(exc.conflicts.segment_of)
        conflict["members_already"] = bulk.members_among(db.session, segment, list(others))
        return rejected(errors, back, "segments/_bulk_form.html", conflict=conflict, **context)
    except AppError as exc:
        return rejected(exc, back, "segments/_bulk_form.html", fields=BULK_FIELDS, **context)
    notes = _source_notes(parts)
    context["keep_file"] = False  # added: the form comes back empty
    if isinstance(result, BulkOperation):
        message = f"Adding {result.total:,} ids in the background: progress below.{_skipped(result.skipped, segment)} {notes}"
        return updated(
            message.strip(),
            back,
            "segments/_bulk_form.html",
            form={},
            errors={},
            operation=result,
            trigger=CHANGED,
            **context,
        )
    message = (
        f"{result.added:,} added, {result.updated:,} expiry updated, {result.unchanged:,} already "
        f"{'a member' if result.unchanged == 1 else 'members'} ({result.received:,} {'id' if result.received == 1 else 'ids'} received"
        f"{_sources(parts)}).{_skipped(result.skipped, segment)} {notes}"
    )
    return updated(
        message.strip(),
        back,
        "segments/_bulk_form.html",
        "segments/_members_oob.html",
        form={},
        errors={},
        trigger=CHANGED,
        **context,
        **_members_context(segment, {}),
    )


def _bulk_ids() -> tuple[FormErrors, list[ParsedIds], str]:
    """The bulk-add form's ids: (problems under their fields, the parsed parts, the file's name)."""
    upload = request.files.get("file")
    file_name = (upload.filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1] if upload else ""
    pasted = request.form.get("user_ids", "")
    errors, parts = FormErrors(), []
    if not pasted.strip() and not file_name:
        errors.add("user_ids", "Paste user ids or choose a file.")
    for parse in (
        lambda: parse_pasted(pasted, MAX_BULK_IDS) if pasted.strip() else None,  # field user_ids
        lambda: parse_file(upload.stream, file_name, MAX_BULK_IDS) if upload and file_name else None,  # file
    ):
        try:
            parsed = parse()
        except ValidationFailed as exc:
            _place(errors, exc)
        else:
            if parsed is not None:
                parts.append(parsed)
    return errors, parts, file_name


CONFLICT_SAMPLE = 10


def _conflict_errors(
    conflicts: bulk.GroupConflicts, parts: list[ParsedIds], listed: int
) -> tuple[FormErrors, dict[str, Any]]:
    """A refused add's conflicts in words, under the field each conflicting id came from (the
    paste box, the file or both), and what the form offers next: the count and segments, a
    sample, a download of them all and a button that adds the others."""
    errors = FormErrors()
    by_segment = conflicts.by_segment()
    where = _and(
        [f"{slug} ({count:,})" if len(by_segment) > 1 else slug for slug, count in by_segment.items()]
    )
    group, field = conflicts.group, "user_ids"
    for part in parts:
        name = "user_ids" if part.source == "pasted" else "file"
        mine = sorted({u for u in part.ids if u in conflicts.segment_of})
        if not mine:
            continue
        field = name
        what = "pasted ids" if name == "user_ids" else f"ids in {part.source}"
        errors.headlines[name] = (
            f"Nothing was added: {len(mine):,} of the {len(set(part.ids)):,} {what} "
            f"{'is' if len(mine) == 1 else 'are'} already in {where}, which "
            f"{'shares' if len(by_segment) == 1 else 'share'} exclusion group {group}."
        )
        sample = ", ".join(str(u) for u in mine[:CONFLICT_SAMPLE])
        errors.add(
            name,
            f"A user can be in only one segment of a group. "
            f"{'They are' if len(mine) > 1 else 'It is'}: {sample}{', …' if len(mine) > CONFLICT_SAMPLE else '.'}",
        )
    conflict = {
        "count": len(conflicts),
        "group": group,
        "by_segment": by_segment,
        "others": listed - len(conflicts),
        "field": field,
    }
    return errors, conflict


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _skipped(count: int, segment) -> str:
    if not count:
        return ""
    return f" {count:,} skipped: already in another segment of exclusion group {segment.exclusion_group}."


@bp.post("/segments/<slug>/members/conflicts.csv")
def conflicting_ids(slug: str):
    """The ids of the bulk-add form (paste and file, posted again) that are already in another
    segment of the segment's exclusion group, as CSV (``user_id,segment``): what a refused add
    names, to take elsewhere. Nothing is written."""
    segment = live_segment(slug)
    errors, parts, _ = _bulk_ids()
    if errors:  # (without JavaScript: flashed on the segment page; the script shows it in the form)
        back = url_for("web.show_segment", slug=slug)
        return rejected(errors, back, "segments/_bulk_form.html", segment=segment, ttl_choices=TTL_CHOICES)
    conflicts = bulk.conflicts_for(db.session, slug, [u for part in parts for u in part.ids])
    body = "user_id,segment\n" + "".join(f"{u},{s}\n" for u, s in sorted(conflicts.segment_of.items()))
    response = make_response(body)
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="conflicts-{segment.slug}.csv"'
    return response


def _place(errors: FormErrors, exc: ValidationFailed) -> None:
    """The problems in words under their fields (web.messages.form_errors); tokens of a list that
    are not ids (``id_token_invalid``, each with its line) get the parser's count above them."""
    errors.merge(form_errors(exc, BULK_FIELDS))
    for item in exc.details:
        if item.get("code") == "id_token_invalid":
            errors.headlines[str(item.get("field"))] = f"Nothing was added: {exc.message}."


def _sources(parts: list[ParsedIds]) -> str:
    if len(parts) < 2:
        return ""
    return ": " + " and ".join(
        f"{len(p.ids):,} pasted" if p.source == "pasted" else f"{len(p.ids):,} from {p.source}" for p in parts
    )


def _source_notes(parts: list[ParsedIds]) -> str:
    notes = []
    for part in parts:
        if part.column:
            notes.append(
                f"{part.source}: the first line was read as column names; the ids come from its "
                f"{part.column} column."
            )
        elif part.header:
            notes.append(f"{part.source}: the first line (“{part.header}”) was read as a column header.")
    return " ".join(notes)


@bp.get("/operations/<operation_id>/status")
def operation_status(operation_id: str):
    operation = bulk.get_operation(db.session, operation_id)
    response = make_response(render_template("segments/_operation.html", operation=operation))
    if operation.status == "finished":  # the last poll: the page's counts catch up
        response.headers["HX-Trigger"] = CHANGED
    return response


@bp.post("/segments/<slug>/members/<user_id>/remove")
@transactional
def remove_member(slug: str, user_id: str):
    uid = parse_user_id(user_id)
    result = user_changes.change_user_segments(
        db.session, uid, [], [slug], reason=Reason.DASHBOARD, actor=dashboard_actor()
    )
    segment = live_segment(slug)
    message = f"User {uid} removed from {slug}." if result.removed else f"User {uid} was not a member."
    return updated(
        message,
        url_for("web.show_segment", slug=slug),
        "segments/_members.html",
        trigger=CHANGED,
        segment=segment,
        **_members_context(segment),
    )


@bp.get("/segments/<slug>/delete")
def confirm_delete(slug: str):
    """The delete confirmation; for a segment deleted already (Back after deleting it), its
    deleted page, with Restore."""
    try:
        segment = live_segment(slug)
    except NotFound:
        if deleted.deleted_or_none(slug) is None:
            raise
        return redirect(url_for("web.show_deleted", slug=slug))
    return _delete_page(segment, FormErrors(), impact.of_delete(db.session, segment))


def _gone_already(slug: str):
    """A delete sent for a segment deleted meanwhile (a second click): its deleted page."""
    flash(f"Segment {slug} has been deleted already.", "success")
    return _navigate(url_for("web.show_deleted", slug=slug))


def _navigate(url: str):
    """A redirect; for htmx a full navigation (HX-Redirect) to a new history entry."""
    if not is_htmx():
        return redirect(url)
    response = make_response("", 204)
    response.headers["HX-Redirect"] = url
    return response


def _delete_page(
    segment, errors: FormErrors, found: impact.Impact, *, changed_since: bool = False, status=200
):
    """The delete confirmation: how many known users leave (and, in a group, join its other
    segments) as of now, computed by services.impact on the catalog version the form carries
    (htmx: the form alone, swapped in place)."""
    html = render_template(
        "segments/_delete_form.html" if is_htmx() else "segments/confirm_delete.html",
        segment=segment,
        errors=errors,
        stats=segments.segment_stats(db.session, segment),
        found=found,
        changed_since=changed_since,
        typed=request.form.get("confirm", "").strip(),  # kept when refused (mistyped, numbers changed)
    )
    return make_response(html, status)


@bp.post("/segments/<slug>/delete")
@transactional
def delete_segment(slug: str):
    """Delete once the slug is typed, against the catalog version the page's numbers were
    computed on: if the segments changed since, the page comes back with the new numbers."""
    typed = request.form.get("confirm", "").strip()
    if not segments.is_live_slug(db.session, slug) and deleted.deleted_or_none(slug) is not None:
        return _gone_already(slug)
    if typed != slug:
        segment = live_segment(slug)
        errors = FormErrors()
        errors.add(
            "confirm",
            f"Type {slug} exactly as shown (upper case) to confirm."
            if typed.upper() == slug
            else f"That is not {slug}: type the slug exactly as shown to confirm.",
        )
        return _delete_page(segment, errors, impact.of_delete(db.session, segment), status=422)
    found = impact.preview_delete(db.session, slug)  # what the deletion moves (history records these)
    try:
        _, removal = bulk.delete_segment(
            db.session,
            slug,
            actor=dashboard_actor(),
            expected_version=confirmed_version(request.form, "confirm"),
        )
    except AppError as exc:
        if not catalog_moved(exc):
            raise
        abandon()
        segment = live_segment(slug)
        return _delete_page(segment, FormErrors(), impact.of_delete(db.session, segment), changed_since=True)
    left = found.own.leaving
    later = " (their rows are being removed in the background)" if removal else ""
    joined = "".join(f"; {m.joining:,} joined {m.slug}" for m in found.others if m.joining)
    flash(
        f"Segment {slug} deleted; {left:,} {'member' if left == 1 else 'members'} left it{later}{joined}.",
        "success",
    )
    return _navigate(url_for("web.index"))


# -- bulk remove and replace: a preview that states how many leave and join, then the change --
# (segments/_bulk_remove_replace.html, which the segment page includes with ``segment`` and
# ``ttl_choices``). Pasted ids and a file are both used. The numbers are services.impact's (the
# API's dry run, one computation); the preview carries the catalog version they were computed
# on and a fingerprint of the list and the choice: a change whose form no longer matches its
# preview is refused, one that meets a newer catalog shows the new numbers to confirm again.

BULK_CHANGE = "segments/_bulk_remove_replace.html"
BULK_CHANGE_MODES = ("remove", "replace")


def _bulk_change_input() -> tuple[str, list[int], list[int]]:
    """(mode, ids, the ids that came from a file) from the form; ValidationFailed naming every
    problem. Without JavaScript the confirmation page carries a file's ids (``carried_ids``)."""
    from webapp.errors import detail
    from webapp.web import id_lists

    mode = request.form.get("mode", "")
    if mode not in BULK_CHANGE_MODES:
        raise ValidationFailed(
            "Choose whether to remove these ids or replace the members with them.",
            [detail("mode", "choose remove or replace", code="mode_invalid")],
        )
    upload = request.files.get("file")
    name = (upload.filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1] if upload is not None else ""
    pasted = request.form.get("user_ids", "")
    carried = request.form.get("carried_ids", "")
    ids: list[int] = []
    from_file: list[int] = []
    if pasted.strip():
        ids += id_lists.parse_pasted(pasted, MAX_BULK_IDS).ids
    if upload is not None and name:
        from_file = id_lists.parse_file(upload.stream, name, MAX_BULK_IDS).ids
    elif carried.strip():
        from_file = id_lists.parse_pasted(carried, MAX_BULK_IDS).ids
    ids += from_file
    if not ids:
        raise ValidationFailed(
            "Paste user ids or choose a file.",
            [detail("user_ids", "no user ids given", code="user_ids_empty")],
        )
    return mode, ids, from_file


def _bulk_change_fingerprint(mode: str, ids: list[int]) -> str:
    import hashlib

    digest = hashlib.blake2b(mode.encode(), digest_size=16)
    digest.update(",".join(map(str, sorted(set(ids)))).encode())
    for name in ("ttl_seconds", "expires_at"):
        digest.update(f"|{request.form.get(name, '').strip()}".encode())
    return digest.hexdigest()


def _bulk_impact(slug: str, mode: str, ids: list[int]) -> impact.Impact:
    """What the bulk remove or replace would move now (services.impact, validated as the change is)."""
    if mode == "remove":
        return impact.preview_remove(db.session, slug, ids)
    ttl, until = form_expiry()
    return impact.preview_replace(db.session, slug, ids, ttl, until)


def _bulk_change_problem(exc: AppError, slug: str, *, abandon_changes: bool = False):
    """A refused preview or change: the problems in the form's result area (422), or flashed."""
    if abandon_changes:
        abandon()
    problems = [str(item.get("message", "")) for item in exc.details if item.get("message")][:20]
    if not is_htmx():
        flash(exc.message + "".join(f" — {p}" for p in problems[:5]), "error")
        return redirect(url_for("web.show_segment", slug=slug) + "#bulk-change")
    return render_template(BULK_CHANGE, part="problem", error=exc.message, problems=problems), 422


def _bulk_preview_answer(
    segment, mode: str, ids: list[int], from_file: list[int], found: impact.Impact, *, changed_since=False
):
    """The numbers to confirm: in the card's result area (htmx), or, without JavaScript, the whole
    segment page with the card holding the same list (a file's ids carried in a hidden field)."""
    preview = {
        "segment": segment,
        "mode": mode,
        "found": found,
        "listed": len(set(ids)),
        "received": len(ids),
        "fingerprint": _bulk_change_fingerprint(mode, ids),
        "changed_since": changed_since,
    }
    if is_htmx():
        return render_template(BULK_CHANGE, part="preview", **preview)
    carried = ",".join(map(str, from_file))
    return render_template(
        "segments/show.html",
        **{
            **page_context(segment),
            "bulk_form": request.form,
            "bulk_preview": preview,
            "carried_ids": carried,
        },
    )


@bp.post("/segments/<slug>/members/bulk-preview")
def bulk_change_preview(slug: str):
    """How many users a bulk remove or replace would take out and bring in, to confirm."""
    segment = live_segment(slug)
    try:
        mode, ids, from_file = _bulk_change_input()
        found = _bulk_impact(slug, mode, ids)
    except AppError as exc:
        return _bulk_change_problem(exc, slug)
    return _bulk_preview_answer(segment, mode, ids, from_file, found)


def _with_expiry(
    write: Callable[..., Any],
    slug: str,
    ids: list[int],
    ttl: int | None,
    until: datetime | None,
    **options: Any,
) -> Any:
    """A bulk add or replace as the dashboard asks it: the form's ids and expiry, by its user."""
    return write(
        db.session,
        slug,
        ids,
        ttl_seconds=ttl,
        expires_at=until,
        reason=Reason.DASHBOARD,
        actor=dashboard_actor(),
        **options,
    )


@bp.post("/segments/<slug>/members/bulk-change")
@transactional
def bulk_change(slug: str):
    """Apply a previewed bulk remove or replace (small lists now, large ones in the background),
    against the catalog version its numbers were computed on: newer, the new numbers are shown."""
    from webapp.errors import detail

    segment = live_segment(slug)
    mode, ids, from_file = "", list[int](), list[int]()
    try:
        if request.form.get("confirm") != "yes":
            raise ValidationFailed(
                "Preview the change and confirm it first.",
                [detail("confirm", "not confirmed", code="not_confirmed")],
            )
        mode, ids, from_file = _bulk_change_input()
        expected = request.form.get("fingerprint")
        if expected and expected != _bulk_change_fingerprint(mode, ids):
            raise ValidationFailed(
                "The list or the choice changed since the preview: preview it again.",
                [detail("fingerprint", "does not match the preview", code="preview_stale")],
            )
        version = confirmed_version(request.form, "confirm")
        result: bulk.RemoveResult | bulk.ReplaceResult | BulkOperation
        if mode == "remove":
            result = bulk.bulk_remove(
                db.session,
                slug,
                ids,
                reason=Reason.DASHBOARD,
                actor=dashboard_actor(),
                expected_version=version,
            )
        else:
            result = _with_expiry(bulk.bulk_replace, slug, ids, *form_expiry(), expected_version=version)
    except AppError as exc:
        if not catalog_moved(exc):
            return _bulk_change_problem(exc, slug, abandon_changes=True)
        abandon()
        try:
            found = _bulk_impact(slug, mode, ids)
        except AppError as again:
            return _bulk_change_problem(again, slug)
        return _bulk_preview_answer(segment, mode, ids, from_file, found, changed_since=True)
    operation = result if isinstance(result, BulkOperation) else None
    if isinstance(result, bulk.RemoveResult):
        message = (
            f"{result.removed:,} removed from {segment.slug} ({result.not_members:,} listed were not in it)."
        )
    elif isinstance(result, bulk.ReplaceResult):
        message = (
            f"{segment.slug} replaced: {result.added:,} joined, {result.removed:,} left, "
            f"{result.updated:,} expiry updated, {result.unchanged:,} unchanged."
        )
    else:
        verb = "Removing" if mode == "remove" else "Replacing the members with"
        message = f"{verb} {len(set(ids)):,} ids in the background: progress below."
    if not is_htmx():
        flash(message, "success")
        return redirect(url_for("web.show_segment", slug=slug))
    body = render_template(BULK_CHANGE, part="result", message=message, operation=operation)
    body += render_template("_flash_oob.html", messages=[("success", message)])
    return body, 200, {"HX-Trigger": "segment-changed"}


@bp.get("/segments/<slug>/members/bulk-change/<operation_id>")
def bulk_change_status(slug: str, operation_id: str):
    """A background bulk remove or replace's progress (polled every second until it ends)."""
    operation = bulk.get_operation(db.session, operation_id)
    headers = {"HX-Trigger": "segment-changed"} if operation.status == "finished" else {}
    return render_template(BULK_CHANGE, part="operation", operation=operation), 200, headers
