"""The shared kernel: what every service agrees on and nothing else (standard library and Pydantic
only; import-linter holds it to that).

- `vocabulary`: the codes services exchange about a referral (priority, route, source);
- `events`: one frozen Pydantic model per event subject, built by producers and validated by
  consumers;
- `clocks`, `coverage`, `postcodes`, `timezones`: the pure rules more than one service applies
  (the four-week and national clocks, which team covers a postcode, postcode forms, London time).
"""
