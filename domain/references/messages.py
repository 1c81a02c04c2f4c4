"""The messages of the reference workflow: to referees (request, reminder) and to candidates."""

from __future__ import annotations

from domain.notifications.templates import EmailForm, register

register(
    "reference_request",
    email=EmailForm(
        subject="$candidate_name asks you for a reference",
        text=(
            "Hello $referrer_name,\n\n"
            "$candidate_name has asked you for a reference, as their $relationship. "
            "Answering takes about ten minutes and needs no account:\n\n$link\n\n"
            "The link is valid until $expires_on. If you would rather not answer, you can decline "
            "on the same page. If you do not know $candidate_name, ignore this email.\n"
        ),
        html=(
            "<p>Hello $referrer_name,</p>\n"
            "<p>$candidate_name has asked you for a reference, as their $relationship. "
            "Answering takes about ten minutes and needs no account.</p>\n"
            '<p><a href="$link">Answer the questionnaire</a></p>\n'
            "<p>The link is valid until $expires_on. If you would rather not answer, you can decline "
            "on the same page. If you do not know $candidate_name, ignore this email.</p>"
        ),
    ),
    sms="DeepRef: $candidate_name asks you for a reference ($relationship). Answer or decline by $expires_on: $link",
)

register(
    "reference_reminder",
    email=EmailForm(
        subject="Reminder: $candidate_name is waiting for your reference",
        text=(
            "Hello $referrer_name,\n\n"
            "$candidate_name is still waiting for your reference, as their $relationship:\n\n$link\n\n"
            "The link is valid until $expires_on. You can also decline on the same page.\n"
        ),
        html=(
            "<p>Hello $referrer_name,</p>\n"
            "<p>$candidate_name is still waiting for your reference, as their $relationship.</p>\n"
            '<p><a href="$link">Answer the questionnaire</a></p>\n'
            "<p>The link is valid until $expires_on. You can also decline on the same page.</p>"
        ),
    ),
    sms="DeepRef reminder: $candidate_name is waiting for your reference. Answer or decline by $expires_on: $link",
)

register(
    "reference_completed",
    email=EmailForm(
        subject="Your reference from $referrer_name is ready",
        text=(
            "Hello $candidate_name,\n\n"
            "$referrer_name has answered your reference request. Its verification is done: $outcome\n\n"
            "You can now share it with employers.\n"
        ),
        html=(
            "<p>Hello $candidate_name,</p>\n"
            "<p>$referrer_name has answered your reference request. Its verification is done: $outcome</p>\n"
            "<p>You can now share it with employers.</p>"
        ),
    ),
)

register(
    "reference_declined",
    email=EmailForm(
        subject="$referrer_name declined your reference request",
        text="Hello $candidate_name,\n\n$referrer_name declined your reference request.$reason\n",
        html="<p>Hello $candidate_name,</p>\n<p>$referrer_name declined your reference request.$reason</p>",
    ),
)

register(
    "reference_expired",
    email=EmailForm(
        subject="Your reference request to $referrer_name has expired",
        text=(
            "Hello $candidate_name,\n\n"
            "$referrer_name did not answer your reference request within $days days, so its link "
            "no longer works. You can send a new request.\n"
        ),
        html=(
            "<p>Hello $candidate_name,</p>\n"
            "<p>$referrer_name did not answer your reference request within $days days, so its link "
            "no longer works. You can send a new request.</p>"
        ),
    ),
)
