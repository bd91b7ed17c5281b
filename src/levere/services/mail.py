"""Sending e-mail through SMTP."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from levere.config import SmtpSettings


class Mailer:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.settings.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        with smtplib.SMTP(
            self.settings.host, self.settings.port, timeout=self.settings.timeout_seconds
        ) as smtp:
            if self.settings.starttls:
                smtp.starttls()
            if self.settings.username and self.settings.password:
                smtp.login(self.settings.username, self.settings.password.get_secret_value())
            smtp.send_message(message)
