//! Who is asking: the verified subject of a bearer token.

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub admin: bool,
    /// The request's `x-request-id`, for the audit trail.
    pub request_id: Option<String>,
}

impl Caller {
    /// Owners see their own holds and bookings; admins see all. Anyone else gets 404.
    pub fn may_access(&self, owner: &str) -> bool {
        self.admin || self.user_id == owner
    }

    pub fn role(&self) -> &'static str {
        if self.admin { "admin" } else { "user" }
    }
}
