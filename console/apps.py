from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator's views of the whole fleet: Prometheus metrics, the admin dashboard, live events."""

    name = "console"
    verbose_name = "Operator console"

    def ready(self) -> None:
        from django.contrib import admin

        # The admin's first page is the fleet dashboard (templates/admin/dashboard.html).
        admin.site.index_template = "admin/dashboard.html"
        admin.site.site_title = admin.site.site_header = "AIWM fleet console"
        admin.site.index_title = "Fleet"
