/**
 * `stageline/dashboard`: a live page of runs. `await dashboard()` serves it; a run given the option
 * `dashboard` shows on it while it goes on, and stays with its final state once it ends. A separate
 * entry point, so that the core import does not load the server.
 * @module stageline/dashboard
 */
export { type Dashboard, type DashboardOptions, dashboard } from './server.js'
