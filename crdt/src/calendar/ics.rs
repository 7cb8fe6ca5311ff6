//! iCalendar (RFC 5545) import and export. (Being written.)
