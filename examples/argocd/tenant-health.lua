-- Argo CD health check of a stockade.dev Tenant. Install it in argocd-cm as
-- `resource.customizations.health.stockade.dev_Tenant`: `kubectl apply --server-side -k examples/argocd`.
-- It reads what kstatus reads: observedGeneration, then Stalled, Ready and Reconciling.
local health = {status = "Progressing", message = "waiting for the Stockade operator"}
if obj.status == nil then
  return health
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  health.message = "the operator has not observed generation " .. tostring(generation) .. " yet"
  return health
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions or {}) do
  conditions[condition.type] = condition
end
local stalled, ready, reconciling = conditions["Stalled"], conditions["Ready"], conditions["Reconciling"]
if stalled ~= nil and stalled.status == "True" then
  return {status = "Degraded", message = stalled.message}
end
if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = ready.message}
end
if ready ~= nil and ready.reason == "Suspended" and obj.spec ~= nil and obj.spec.suspended == true then
  return {status = "Suspended", message = ready.message}
end
if reconciling ~= nil and reconciling.status == "True" then
  return {status = "Progressing", message = reconciling.message}
end
if ready ~= nil then
  health.message = ready.message
end
return health
