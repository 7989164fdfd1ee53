"""A changelist's rows rendered from a plan made once per page.

Django's `items_for_result` works every cell out from scratch: it looks the column up on the
model and the admin, decides its link and classes, fetches the empty-value text, reverses the
row's URL and renders the selection checkbox through a form widget and its template. At ~0.4 ms a
row of eleven columns that is most of a 50-row page, and why the nodes list was 1.9-2.3x slower
at 1,000 nodes than at 10 (BENCHMARKS.md, "The operator portal"). The plan does the per-column
work once; a row is then one small function per cell. The HTML is Django's, byte for byte
(tests/test_admin.py compares the two on every changelist). Lists with editable columns or opened
as popups keep Django's own rendering: they need the per-row forms and popup data it handles.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote as url_quote

from django.conf import settings
from django.contrib.admin import utils as admin_utils
from django.contrib.admin.templatetags import admin_list
from django.contrib.admin.templatetags.admin_list import ResultList
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import (
    FieldIsAForeignKeyColumnName,
    display_for_field,
    display_for_value,
    lookup_field,
    quote,
)
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils import dateformat, formats, timezone
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

Cell = Callable[[Any], str]
# Django's private helpers, so that a cell is decided exactly as Django decides it (the stubs do not
# type them; the comparison test in tests/test_admin.py notices if they change).
_boolean_icon = admin_list._boolean_icon  # type: ignore[attr-defined]
_coerce_field_name = admin_list._coerce_field_name  # type: ignore[attr-defined]
_get_non_gfk_field = admin_utils._get_non_gfk_field  # type: ignore[attr-defined]
_PK_SLOT = "aiwm-pk-slot"  # stands for the row's quoted primary key in the reversed change URL


def result_list(cl: ChangeList) -> dict[str, Any]:
    """The context of Django's `result_list` tag, with the rows from the plan (see the module)."""
    if getattr(cl, "formset", None) is not None or cl.is_popup or cl.to_field:
        return admin_list.result_list(cl)
    headers = list(admin_list.result_headers(cl))
    return {
        "cl": cl,
        "result_hidden_fields": [],  # only list_editable forms have hidden fields
        "result_headers": headers,
        "num_sorted_fields": sum(1 for h in headers if h["sortable"] and h["sorted"]),
        "results": [ResultList(None, [row]) for row in rows(cl)],
    }


def rows(cl: ChangeList) -> Iterator[SafeString]:
    """Each result as the cells of its `<tr>`, joined into one safe string."""
    cells = _plan(cl)
    for result in cl.result_list:
        yield mark_safe("".join([cell(result) for cell in cells]))


def _plan(cl: ChangeList) -> list[Cell]:
    change_url = _change_url(cl)
    cells = []
    first = True
    for index, name in enumerate(cl.list_display):
        linked = cl.list_display_links is not None and (
            (first and not cl.list_display_links) or name in cl.list_display_links
        )
        tag = "th" if linked and first else "td"
        if linked:
            first = False
        cells.append(_cell(cl, index, name, tag, change_url if linked else None))
    return cells


def _change_url(cl: ChangeList) -> Callable[[Any], str] | None:
    """The row's change URL: reversed once with a slot for the key, as `cl.url_for_result` would."""
    opts = cl.opts
    try:
        template = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change",
            args=(_PK_SLOT,),
            current_app=cl.model_admin.admin_site.name,
        )
    except NoReverseMatch:
        return None
    sample = template.replace(_PK_SLOT, "0")
    # The preserved filters are the same query string on every row.
    preserved = add_preserved_filters({"preserved_filters": cl.preserved_filters, "opts": opts}, sample)
    query = preserved[len(sample) :] if preserved.startswith(sample) else ""
    head, tail = template.split(_PK_SLOT)
    # `quote` is the admin's key escaping; reverse() would then percent-encode what is unsafe in
    # a path, which the admin's escaping has left nothing of but the characters below.
    return lambda result: head + url_quote(str(quote(result.pk)), safe="/~:@!$&'()*+,;=") + tail + query


def _cell(cl: ChangeList, index: int, name: Any, tag: str, change_url: Callable[[Any], str] | None) -> Cell:
    model_admin = cl.model_admin
    empty = model_admin.get_empty_value_display()
    classes = f"field-{_coerce_field_name(name, index)}"
    field = _field(cl, name)
    if field is not None and isinstance(field, (models.DateField, models.TimeField, models.ForeignKey)):
        classes += " nowrap"
    if field is not None and isinstance(field.remote_field, models.ManyToOneRel):
        # A relation shows the related object itself.
        def content(result: Any) -> tuple[str, str]:
            related = getattr(result, field.name)
            return (empty if related is None else related), classes

    elif field is not None:
        display = _field_display(field, empty, avoid_link=change_url is not None)

        def content(result: Any) -> tuple[str, str]:
            value = getattr(result, name)
            if isinstance(value, str) and value.strip() == "":
                value = ""
            return display(value), classes

    elif name == "action_checkbox":
        label = gettext("Select this object for an action - {}")

        def content(result: Any) -> tuple[str, str]:
            return (
                format_html(
                    '<input type="checkbox" name="_selected_action" value="{}" class="action-select" aria-label="{}">',
                    str(result.pk),
                    format_html(label, str(result)),
                ),
                "action-checkbox",
            )

    else:
        content = _computed_content(model_admin, name, empty, classes)  # type: ignore[assignment]  # same signature

    def cell(result: Any) -> str:
        text, css = content(result)
        if change_url is not None:
            text = format_html('<a href="{}">{}</a>', change_url(result), text)
        return f'<{tag} class="{css}">{conditional_escape(text)}</{tag}>'

    return cell


def _field(cl: ChangeList, name: Any) -> models.Field | None:
    """The column's model field, when it is a plain one (Django's lookup_field decides the same)."""
    if callable(name):
        return None
    try:
        field = _get_non_gfk_field(cl.opts, name)
    except (FieldDoesNotExist, FieldIsAForeignKeyColumnName):
        return None
    return None if field.auto_created else field


def _field_display(field: models.Field, empty: str, avoid_link: bool) -> Callable[[Any], str]:
    """`display_for_field` with its type tests made once for the column."""
    if getattr(field, "flatchoices", None):
        try:
            labels = dict(field.flatchoices)
        except TypeError:
            return lambda value: display_for_field(value, field, empty, avoid_link)

        def choice(value: Any) -> str:
            try:
                return labels.get(value, empty)
            except TypeError:
                return display_for_field(value, field, empty, avoid_link)

        return choice
    if isinstance(field, models.BooleanField):
        icons = {value: _boolean_icon(value) for value in (True, False, None)}
        return lambda value: icons[value]
    empty_values = field.empty_values
    convert: Callable[[Any], str]
    if isinstance(field, models.DateTimeField):
        convert = datetime_formatter()
    elif isinstance(field, (models.IntegerField, models.AutoField)) and not settings.USE_THOUSAND_SEPARATOR:
        convert = str  # what number_format gives an int without grouping
    elif isinstance(field, (models.CharField, models.TextField)) and not isinstance(field, models.URLField):
        convert = str  # display_for_value's last branch for a string
    else:
        return lambda value: display_for_field(value, field, empty, avoid_link)

    def display(value: Any) -> str:
        return empty if value in empty_values else convert(value)

    return display


def _computed_content(model_admin: Any, name: Any, empty: str, classes: str) -> Callable[[Any], tuple[str, str]]:
    """A column computed by the admin or the model (a method, property or callable)."""
    if callable(name) or (hasattr(model_admin, name) and name != "__str__"):
        attr = name if callable(name) else getattr(model_admin, name)

        def lookup(result: Any) -> Any:
            return attr(result)

    else:
        attr = getattr(model_admin.model, name, None)

        def lookup(result: Any) -> Any:
            return lookup_field(name, result, model_admin)[2]

    boolean = getattr(attr, "boolean", False)
    if isinstance(attr, property) and hasattr(attr, "fget"):
        boolean = getattr(attr.fget, "boolean", False)
    empty = getattr(attr, "empty_value_display", empty)

    def content(result: Any) -> tuple[str, str]:
        try:
            value = lookup(result)
        except ObjectDoesNotExist:
            return empty, classes
        if isinstance(value, str) and value.strip() == "":
            value = ""
        css = f"{classes} nowrap" if isinstance(value, (datetime.date, datetime.time)) else classes
        return display_for_value(value, empty, boolean), css

    return content


def datetime_formatter() -> Callable[[datetime.datetime], str]:
    """`formats.localize` of a datetime (local time, DATETIME_FORMAT) with the format parsed once.
    Django's `dateformat.format` parses it again on every call (~30 us, most of a list row's time);
    the pieces and the calls are the same as its `Formatter.format`."""
    pieces: list[tuple[bool, str]] = []
    for index, piece in enumerate(dateformat.re_formatchars.split(str(formats.get_format("DATETIME_FORMAT")))):  # type: ignore[attr-defined]
        if index % 2:
            pieces.append((True, piece))
        elif piece:
            pieces.append((False, dateformat.re_escaped.sub(r"\1", piece)))  # type: ignore[attr-defined]

    def format_datetime(value: datetime.datetime) -> str:
        local = dateformat.DateFormat(timezone.template_localtime(value))  # type: ignore[attr-defined]
        return "".join([str(getattr(local, piece)()) if specifier else piece for specifier, piece in pieces])

    return format_datetime
