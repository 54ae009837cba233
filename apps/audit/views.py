from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View

from apps.accounts.permissions import RoleRequiredMixin
from apps.accounts.roles import Role
from apps.audit.forms import AuditFilterForm
from apps.audit.selectors import audit_chain_first_break, audit_events

AUDIT_READERS: frozenset[str] = frozenset({Role.AUDITOR})


class AuditBrowserPage(RoleRequiredMixin, View):
    allowed_roles = AUDIT_READERS

    def get(self, request: HttpRequest) -> HttpResponse:
        form = AuditFilterForm(request.GET or None)
        filters = form.cleaned_data if form.is_valid() else {}
        events = audit_events(**{k: v for k, v in filters.items() if v})
        page = Paginator(events, 50).get_page(request.GET.get("page"))
        query = request.GET.copy()
        query.pop("page", None)
        context = {
            "form": form,
            "page": page,
            "query": query.urlencode(),
            "chain_break": audit_chain_first_break() if request.GET.get("verify") else None,
            "verified": bool(request.GET.get("verify")),
        }
        return render(request, "audit/browser.html", context)
