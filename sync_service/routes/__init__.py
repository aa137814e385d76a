"""HTTP route handlers, one module per area. Handlers stay thin: domain logic lives in the package."""
