"""The suite's front door for people (issue 22): sign-in with OpenID Connect at the gateway,
server-side sessions, and server-rendered pages in the NHS.UK design, each page action an API call
made through the gateway as the signed-in person."""
