"""Sign-in with other parties: the OpenID Connect protocol (providers such as Life Science Login and Feide)."""
