//! Watches on the API server. OWNER: controller.
