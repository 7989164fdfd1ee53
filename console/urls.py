from django.urls import path

from console.events import EventTicketView, events_stream

urlpatterns = [
    path("events", events_stream, name="events"),
    path("events/ticket", EventTicketView.as_view(), name="events-ticket"),
]
